/** gRPC methods for tests without .proto: JSON messages over grpc-js's generic client and server. */

// biome-ignore lint/suspicious/noExplicitAny: test messages are free-form JSON
type Json = Record<string, any>;

/** A message as bytes on the wire. */
export const serialize = (value: Json): Buffer => Buffer.from(JSON.stringify(value ?? {}));
/** Bytes on the wire as a message (an empty body is an empty object). */
export const deserialize = (bytes: Buffer): Json => (bytes.length === 0 ? {} : JSON.parse(bytes.toString()));

/** A method definition at `path` with JSON messages, unary unless streaming is asked for. */
export function jsonMethod(path: string, requestStream = false, responseStream = false) {
  return {
    path,
    requestStream,
    responseStream,
    requestSerialize: serialize,
    requestDeserialize: deserialize,
    responseSerialize: serialize,
    responseDeserialize: deserialize,
  };
}
