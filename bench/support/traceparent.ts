let sent = 0;

/** A traceparent unique to each call, as an edge's would be: what the "by hand" variants send. */
export function traceparent(): string {
  const id = (++sent).toString(16);
  return `00-${id.padStart(32, '0')}-${id.padStart(16, '0')}-01`;
}
