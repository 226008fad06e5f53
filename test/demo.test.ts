import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { it } from 'node:test';
import { promisify } from 'node:util';

it('the demo shows the budget shrinking, a deadline and a client cancel crossing every hop', async () => {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--conditions=ctxflow-source', 'examples/demo.ts'],
    { timeout: 30_000 },
  );
  const budgets = [...stdout.matchAll(/arrived with (\d+) ms left/g)].map((m) => Number(m[1]));
  assert.equal(budgets.length, 9, stdout);
  for (let request = 0; request < 3; request++) {
    const [edge, inventory, pricing] = budgets.slice(request * 3, request * 3 + 3) as [
      number,
      number,
      number,
    ];
    assert.ok(edge <= 300 && inventory < edge && pricing < inventory, stdout);
  }
  assert.match(stdout, /pricing +stopped: deadline_exceeded/);
  assert.match(stdout, /got 504 with ctx-cancel-reason: deadline_exceeded/);
  assert.match(stdout, /edge +stopped: client_disconnected/);
  assert.match(stdout, /pricing +stopped: upstream_cancelled/);
});
