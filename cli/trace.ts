/**
 * A trace read back from Jaeger's query API, drawn in the terminal as a waterfall: one line per
 * span, indented under its parent, with its service and operation, a bar at its start and length
 * on the trace's time axis, the budget it arrived with and the cause where its context ended.
 */

/** A span as `GET /api/traces/{traceId}` returns it (the fields drawn). */
export interface JaegerSpan {
  spanID: string;
  operationName: string;
  processID: string;
  /** Microseconds since the epoch. */
  startTime: number;
  /** Microseconds. */
  duration: number;
  references?: { refType: string; spanID: string }[];
  tags?: { key: string; value: unknown }[];
  logs?: { timestamp: number; fields: { key: string; value: unknown }[] }[];
}

/** A trace as `GET /api/traces/{traceId}` returns it in `data[0]`. */
export interface JaegerTrace {
  traceID: string;
  spans: JaegerSpan[];
  processes: Record<string, { serviceName: string }>;
}

/** One drawn line: the span it stands for, its depth, and what the line says of it. */
export interface WaterfallRow {
  spanId: string;
  parentId: string | undefined;
  depth: number;
  service: string;
  operation: string;
  /** Offset from the trace's start and duration, in milliseconds. */
  startMs: number;
  durationMs: number;
  /** The budget the span's hop arrived with, or that a client span sent, in ms. */
  budgetMs: number | undefined;
  /** Why the span's context ended, when it did. */
  cause: string | undefined;
  error: boolean;
}

/** Options of `renderWaterfall`. */
export interface RenderOptions {
  /** Columns of the bar. Default 40. */
  barWidth?: number;
  /** ANSI colours. Default false. */
  color?: boolean;
}

// Attribute (tag) names that say what budget a span's hop had: on arrival (server, consumer) or sent (client, producer).
const BUDGET_TAGS = ['ctxflow.budget.arrival_ms', 'ctxflow.budget_ms', 'ctxflow.budget.sent_ms'];
const CAUSE_TAGS = ['ctxflow.cause.code', 'ctxflow.cause', 'ctxflow.cancel.cause'];

function tag(span: JaegerSpan, keys: readonly string[]): unknown {
  for (const key of keys) {
    const found = span.tags?.find((t) => t.key === key);
    if (found !== undefined) return found.value;
  }
  return undefined;
}

/** The cause a span records: its `ctxflow.cause` attribute, or the first event that carries one. */
function causeOf(span: JaegerSpan): string | undefined {
  const tagged = tag(span, CAUSE_TAGS);
  if (typeof tagged === 'string') return tagged;
  for (const log of span.logs ?? []) {
    const field = log.fields.find((f) => CAUSE_TAGS.includes(f.key));
    if (field !== undefined) return String(field.value);
  }
  return undefined;
}

/**
 * Spans by start time. Timestamps come in whole milliseconds from some collectors, so ties are
 * common: the span with more budget left comes first (it was reached earlier on the way down),
 * then by span id, so the order never depends on the order Jaeger returns spans in.
 */
function byStart(a: JaegerSpan, b: JaegerSpan): number {
  if (a.startTime !== b.startTime) return a.startTime - b.startTime;
  const budget = (span: JaegerSpan) => Number(tag(span, BUDGET_TAGS) ?? Number.NEGATIVE_INFINITY);
  const budgets = budget(b) - budget(a);
  if (budgets !== 0 && !Number.isNaN(budgets)) return budgets;
  return a.spanID < b.spanID ? -1 : a.spanID > b.spanID ? 1 : 0;
}

/** The spans of a trace in drawing order: depth first, children by start time; orphans as roots. */
export function waterfallRows(trace: JaegerTrace): WaterfallRow[] {
  const ids = new Set(trace.spans.map((s) => s.spanID));
  const parentOf = (span: JaegerSpan) =>
    span.references?.find((r) => r.refType === 'CHILD_OF' && ids.has(r.spanID))?.spanID;
  const children = new Map<string | undefined, JaegerSpan[]>();
  for (const span of trace.spans) {
    const parent = parentOf(span);
    children.set(parent, [...(children.get(parent) ?? []), span]);
  }
  const start = Math.min(...trace.spans.map((s) => s.startTime));
  const rows: WaterfallRow[] = [];
  const visit = (parent: string | undefined, depth: number) => {
    const spans = (children.get(parent) ?? []).sort(byStart);
    for (const span of spans) {
      const budget = tag(span, BUDGET_TAGS);
      rows.push({
        spanId: span.spanID,
        parentId: parent,
        depth,
        service: trace.processes[span.processID]?.serviceName ?? span.processID,
        operation: span.operationName,
        startMs: (span.startTime - start) / 1000,
        durationMs: span.duration / 1000,
        budgetMs: typeof budget === 'number' ? budget : budget === undefined ? undefined : Number(budget),
        cause: causeOf(span),
        error: tag(span, ['error']) === true,
      });
      visit(span.spanID, depth + 1);
    }
  };
  visit(undefined, 0);
  return rows;
}

const ANSI = { dim: '\x1b[2m', red: '\x1b[31m', cyan: '\x1b[36m', yellow: '\x1b[33m', reset: '\x1b[0m' };

/** The waterfall of `trace` as text lines, a header line first. */
export function renderWaterfall(trace: JaegerTrace, options: RenderOptions = {}): string[] {
  const rows = waterfallRows(trace);
  const width = options.barWidth ?? 40;
  const paint = (code: keyof typeof ANSI, text: string) =>
    options.color ? `${ANSI[code]}${text}${ANSI.reset}` : text;
  const total = Math.max(...rows.map((r) => r.startMs + r.durationMs), 0.001);
  const labels = rows.map((r) => `${'  '.repeat(r.depth)}${r.service} ${r.operation}`);
  const labelWidth = Math.min(Math.max(...labels.map((l) => l.length), 4), 60);
  const lines = [`trace ${trace.traceID}  ${rows.length} spans  ${total.toFixed(1)} ms`];
  rows.forEach((row, i) => {
    const from = Math.min(width - 1, Math.floor((row.startMs / total) * width));
    const length = Math.max(1, Math.round((row.durationMs / total) * width));
    const bar = `${' '.repeat(from)}${'█'.repeat(Math.min(length, width - from))}`.padEnd(width);
    const label = (labels[i] as string).slice(0, labelWidth).padEnd(labelWidth);
    const budget = row.budgetMs === undefined ? '' : `budget ${Math.round(row.budgetMs)} ms`;
    const cause = row.cause === undefined ? '' : paint('red', `✗ ${row.cause}`);
    const timing = `${row.durationMs.toFixed(1).padStart(7)} ms`;
    const coloured = paint(row.cause !== undefined || row.error ? 'red' : 'cyan', bar);
    lines.push(
      `${label} │${coloured}│${timing}  ${paint('yellow', budget)}${budget && cause ? '  ' : ''}${cause}`.trimEnd(),
    );
  });
  return lines;
}

/** One hop of a trace: a server or consumer span, as the per-hop table shows it. */
export interface Hop {
  service: string;
  transport: 'http' | 'grpc' | 'kafka';
  /** The budget the hop arrived with, in whole milliseconds. */
  budgetMs: number | undefined;
  /** The HTTP status, the gRPC status name, or what became of a message (`handled`, `dead-lettered`, ...). */
  outcome: string;
  /** Why the hop's context ended, when it ended before its work. */
  cause: string | undefined;
}

const GRPC_STATUS: Record<number, string> = {
  0: 'OK',
  1: 'CANCELLED',
  2: 'UNKNOWN',
  4: 'DEADLINE_EXCEEDED',
  8: 'RESOURCE_EXHAUSTED',
  13: 'INTERNAL',
  14: 'UNAVAILABLE',
};

/** The hops of a trace: its server and consumer spans, in start order. */
export function hopsOf(trace: JaegerTrace): Hop[] {
  return trace.spans
    .filter((span) => ['server', 'consumer'].includes(String(tag(span, ['span.kind']))))
    .sort(byStart)
    .map((span) => {
      const grpcStatus = tag(span, ['rpc.grpc.status_code']);
      const httpStatus = tag(span, ['http.response.status_code', 'http.status_code']);
      const kafka = tag(span, ['messaging.system']) === 'kafka';
      const budget = tag(span, BUDGET_TAGS);
      const transport = kafka
        ? 'kafka'
        : grpcStatus !== undefined || tag(span, ['rpc.system']) === 'grpc'
          ? 'grpc'
          : 'http';
      const cause = causeOf(span);
      const outcome = kafka
        ? String(
            tag(span, ['ctxflow.kafka.outcome']) ?? (tag(span, ['error']) === true ? 'error' : 'handled'),
          )
        : grpcStatus !== undefined
          ? (GRPC_STATUS[Number(grpcStatus)] ?? String(grpcStatus))
          : // A response never sent (the caller went away) keeps node:http's default status: not an answer.
            cause !== undefined && Number(httpStatus) < 400
            ? 'no answer'
            : String(httpStatus ?? '?');
      return {
        service: trace.processes[span.processID]?.serviceName ?? span.processID,
        transport,
        budgetMs: budget === undefined ? undefined : Math.round(Number(budget)),
        outcome,
        cause,
      };
    });
}

/** The per-hop table of a trace as text lines: hop, transport, budget on arrival, outcome, cause. */
export function renderHops(hops: readonly Hop[]): string[] {
  const rows = [
    ['hop', 'transport', 'budget on arrival', 'outcome', 'cause'],
    ...hops.map((h) => [
      h.service,
      h.transport,
      h.budgetMs === undefined ? '-' : `${h.budgetMs} ms`,
      h.outcome,
      h.cause ?? '-',
    ]),
  ];
  const widths = (rows[0] as string[]).map((_, i) => Math.max(...rows.map((r) => (r[i] as string).length)));
  return rows.map((row) =>
    row
      .map((cell, i) => cell.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd(),
  );
}

/** Reads a trace from a Jaeger query API (`jaegerUrl`, e.g. http://localhost:16686). */
export async function fetchTrace(jaegerUrl: string, traceId: string): Promise<JaegerTrace> {
  const url = `${jaegerUrl.replace(/\/$/, '')}/api/traces/${traceId}`;
  let response: Response;
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  } catch (error) {
    // fetch says only "fetch failed": the URL and the network error's code say what happened.
    const cause = (error as Error & { cause?: { code?: string; message?: string } }).cause;
    const code = cause?.code ?? cause?.message ?? (error as Error).message;
    throw new Error(`cannot reach ${url} (${code})`);
  }
  if (!response.ok) throw new Error(`GET ${url} answered ${response.status}`);
  const { data } = (await response.json()) as { data?: JaegerTrace[] };
  const trace = data?.[0];
  if (trace === undefined || trace.spans.length === 0) throw new Error(`not found in ${jaegerUrl}`);
  return trace;
}
