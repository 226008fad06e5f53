// Preloaded with `--import` into the start-up bench's application (bench/init/app.ts), as a user's
// telemetry module is: init() with tracing (OTLP/HTTP, its default) when BENCH_TRACING=1, else
// init({ tracing: false }).
import { init } from 'ctxflow/init';

init({ tracing: process.env.BENCH_TRACING === '1' });
