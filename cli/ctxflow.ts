#!/usr/bin/env node
/**
 * `ctxflow trace <traceId> [--jaeger URL]`: draws a trace from Jaeger as a waterfall (the budget
 * each hop arrived with, and where and why a context ended), then a table of its hops. The help
 * texts, the exit codes and every error message are here; the drawing is in trace.ts.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fetchTrace, hopsOf, renderHops, renderWaterfall } from './trace.ts';

/** Where Jaeger's query API is looked for when neither --jaeger nor JAEGER_URL says. */
const DEFAULT_JAEGER = 'http://localhost:16686';

/** Exit codes, as the help texts list them. */
const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

const EXIT_CODES = `Exit codes:
  0  done
  1  the trace could not be read (Jaeger unreachable, answered an error, or does not hold it)
  2  wrong usage (unknown command or option, missing or invalid trace id)`;

const HELP = `ctxflow: deadlines, cancellation and trace context across HTTP, gRPC and Kafka.

Usage:
  ctxflow trace <traceId> [--jaeger URL] [--no-color]
  ctxflow --help | --version

Commands:
  trace    draw a trace from Jaeger: each span with the budget its hop arrived with and
           where and why its context ended, then a table of the hops

Run 'ctxflow trace --help' for its options.

${EXIT_CODES}`;

const TRACE_HELP = `ctxflow trace: draw one trace from Jaeger's query API as a waterfall and a table of hops.

Usage:
  ctxflow trace <traceId> [--jaeger URL] [--no-color]

Arguments:
  traceId          the W3C trace id: 1 to 32 hexadecimal digits (as Jaeger and logs show it)

Options:
  --jaeger URL     Jaeger's query API (default: $JAEGER_URL, else ${DEFAULT_JAEGER})
  --no-color       no ANSI colours (also when NO_COLOR is set or stdout is not a terminal)
  -h, --help       this help

Examples:
  ctxflow trace 1e14b62495598eaebf36d80281ba2aaf
  JAEGER_URL=http://jaeger:16686 ctxflow trace 1e14b62495598eaebf36d80281ba2aaf
  npx ctxflow trace 1e14b62495598eaebf36d80281ba2aaf --jaeger http://127.0.0.1:16686

${EXIT_CODES}`;

function version(): string {
  const manifest = new URL(
    import.meta.url.endsWith('.ts') ? '../package.json' : '../../package.json',
    import.meta.url,
  );
  return (JSON.parse(readFileSync(manifest, 'utf8')) as { version: string }).version;
}

/** A usage error: the message, and where to read more. */
function usage(message: string, help: 'ctxflow --help' | 'ctxflow trace --help'): number {
  console.error(`ctxflow: ${message}\nRun '${help}' for usage.`);
  return EXIT.usage;
}

async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (error) {
    return usage(
      (error as Error).message,
      argv.includes('trace') ? 'ctxflow trace --help' : 'ctxflow --help',
    );
  }
  const { positionals, values } = parsed;
  const [command, traceId, ...extra] = positionals;
  if (values.version) {
    console.log(version());
    return EXIT.ok;
  }
  if (command === undefined) {
    (values.help ? console.log : console.error)(HELP);
    return values.help ? EXIT.ok : EXIT.usage;
  }
  if (command !== 'trace') return usage(`unknown command '${command}'`, 'ctxflow --help');
  if (values.help) {
    console.log(TRACE_HELP);
    return EXIT.ok;
  }
  if (traceId === undefined) return usage('trace: a trace id is required', 'ctxflow trace --help');
  if (!/^[0-9a-f]{1,32}$/i.test(traceId)) {
    return usage(
      `trace: '${traceId}' is not a trace id (1 to 32 hexadecimal digits, e.g. 1e14b62495598eaebf36d80281ba2aaf)`,
      'ctxflow trace --help',
    );
  }
  if (extra.length > 0) return usage(`trace: unexpected argument '${extra[0]}'`, 'ctxflow trace --help');
  const jaeger = values.jaeger ?? process.env.JAEGER_URL ?? DEFAULT_JAEGER;
  const from =
    values.jaeger !== undefined
      ? '--jaeger'
      : process.env.JAEGER_URL !== undefined
        ? 'JAEGER_URL'
        : 'the default';
  const color = process.stdout.isTTY === true && !values['no-color'] && process.env.NO_COLOR === undefined;
  let trace: Awaited<ReturnType<typeof fetchTrace>>;
  try {
    trace = await fetchTrace(jaeger, traceId);
  } catch (error) {
    console.error(
      `ctxflow: trace ${traceId}: ${(error as Error).message}\n` +
        `Jaeger's query API was ${jaeger} (from ${from}). Check that Jaeger runs there and holds the trace, ` +
        `or point elsewhere with --jaeger URL or JAEGER_URL.`,
    );
    return EXIT.failed;
  }
  for (const line of renderWaterfall(trace, { color })) console.log(line);
  const hops = hopsOf(trace);
  if (hops.length > 0) {
    console.log('');
    for (const line of renderHops(hops)) console.log(line);
  }
  if (await hasUi(jaeger)) console.log(`${jaeger.replace(/\/$/, '')}/trace/${traceId}`);
  return EXIT.ok;
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      jaeger: { type: 'string' },
      'no-color': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
    },
  });
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
    process.exit(EXIT.failed);
  },
);
