/**
 * The Prometheus text exposition format, parsed by the reference Python client's parser
 * (`prometheus_client.parser`), installed on first use into ${CTXFLOW_CACHE:-~/.cache/ctxflow}/python.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);
const VERSION = '0.21.1';
const SCRIPT = `
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = [
    {"name": f.name, "type": f.type,
     "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
    for f in text_string_to_metric_families(sys.stdin.read())
]
json.dump(families, sys.stdout)
`;

/** One sample line: its full name (with `_total`, `_bucket`, `_sum`, `_count`), labels and value. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A metric family as the parser groups it. */
export interface Family {
  name: string;
  type: string;
  samples: Sample[];
}

let installed: Promise<string> | undefined;

/** The directory holding prometheus_client, installed with pip the first time. */
function library(): Promise<string> {
  installed ??= (async () => {
    const cache = process.env.CTXFLOW_CACHE || path.join(os.homedir(), '.cache', 'ctxflow');
    const dir = path.join(cache, 'python', `prometheus-client-${VERSION}`);
    if (!fs.existsSync(path.join(dir, 'prometheus_client'))) {
      const partial = `${dir}.${process.pid}.tmp`;
      await exec(
        'python3',
        [
          '-m',
          'pip',
          'install',
          '--quiet',
          '--no-deps',
          '--target',
          partial,
          `prometheus-client==${VERSION}`,
        ],
        {
          timeout: 120_000,
        },
      );
      fs.rmSync(dir, { recursive: true, force: true });
      fs.renameSync(partial, dir);
    }
    return dir;
  })();
  return installed;
}

/** Parses a scrape with the reference parser. */
export async function parseExposition(text: string): Promise<Family[]> {
  const dir = await library();
  const child = exec('python3', ['-c', SCRIPT], {
    env: { ...process.env, PYTHONPATH: dir },
    timeout: 30_000,
  });
  child.child.stdin?.end(text);
  const { stdout } = await child;
  return JSON.parse(stdout) as Family[];
}
