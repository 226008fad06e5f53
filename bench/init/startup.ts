// One start-up measurement, in a fresh process: milliseconds to import ctxflow/init and to run
// init() (BENCH_TRACING=1: with the SDK), printed as JSON.
const started = performance.now();
const { init } = await import('ctxflow/init');
const imported = performance.now();
const telemetry = init({ tracing: process.env.BENCH_TRACING === '1', spanProcessors: [] });
const ready = performance.now();
console.log(JSON.stringify({ importMs: imported - started, initMs: ready - imported }));
await telemetry.shutdown();
