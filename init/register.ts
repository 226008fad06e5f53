/**
 * `node --import ctxflow/register app.js`: ctxflow and tracing for an unchanged application,
 * configured from environment variables (see `optionsFromEnv`). `init()` runs (and registers the
 * loader hook that lets OpenTelemetry instrument ES modules) before the application is loaded;
 * spans still buffered are flushed when the event loop empties.
 */
import { init, optionsFromEnv } from './index.ts';

/** The handle of the `init()` this module ran, for an application that wants to shut it down itself. */
export const telemetry = init(optionsFromEnv(process.env));
process.once('beforeExit', () => {
  void telemetry.shutdown();
});
