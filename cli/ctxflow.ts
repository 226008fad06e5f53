#!/usr/bin/env node
/**
 * `ctxflow trace <traceId> [--jaeger URL]`: draws a trace from Jaeger as a waterfall (the budget
 * each hop arrived with, and where and why a context ended), then a table of its hops. The Jaeger URL defaults to
 * $JAEGER_URL, then http://localhost:16686.
 */
import { parseArgs } from 'node:util';
import { fetchTrace, hopsOf, renderHops, renderWaterfall } from './trace.ts';

const USAGE = 'usage: ctxflow trace <traceId> [--jaeger URL] [--no-color]';

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { jaeger: { type: 'string' }, 'no-color': { type: 'boolean' }, help: { type: 'boolean' } },
  });
  const [command, traceId] = positionals;
  if (values.help || command !== 'trace' || traceId === undefined || !/^[0-9a-f]{1,32}$/i.test(traceId)) {
    console.error(USAGE);
    return values.help ? 0 : 2;
  }
  const jaeger = values.jaeger ?? process.env.JAEGER_URL ?? 'http://localhost:16686';
  const color = process.stdout.isTTY === true && !values['no-color'] && process.env.NO_COLOR === undefined;
  const trace = await fetchTrace(jaeger, traceId);
  for (const line of renderWaterfall(trace, { color })) console.log(line);
  const hops = hopsOf(trace);
  if (hops.length > 0) {
    console.log('');
    for (const line of renderHops(hops)) console.log(line);
  }
  if (await hasUi(jaeger)) console.log(`${jaeger.replace(/\/$/, '')}/trace/${traceId}`);
  return 0;
}

/** True when the Jaeger at `url` serves its web UI (a source build serves only the API). */
async function hasUi(url: string): Promise<boolean> {
  try {
    const page = await fetch(url, { signal: AbortSignal.timeout(2_000) });
    return page.ok && (await page.text()).includes('<title>Jaeger UI</title>');
  } catch {
    return false;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`ctxflow: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  },
);
