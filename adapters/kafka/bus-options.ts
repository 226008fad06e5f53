/** The cancel bus's options, apart from its implementation: `ctxflow/init`'s declarations name them without naming kafkajs. */

/** How the cancel bus is set up; every field has a default. */
export interface CancelBusOptions {
  /** The topic cancel events go to. Default `ctxflow.cancel`. */
  topic?: string;
  /**
   * The longest deadline a message can carry, in ms: a reader starts this far back in the bus, and
   * a cancelled id is remembered this long. Default 60 000 (`maxInboundMs`'s default).
   */
  horizonMs?: number;
  /** At most this many cancelled ids are remembered; the oldest go first. Default 100 000. */
  maxEntries?: number;
  /** Partitions of the bus topic when this creates it. Default 1. */
  partitions?: number;
  /** Replication factor of the bus topic when this creates it. Default: the broker's. */
  replicationFactor?: number;
  /** Longest wait for the reader to catch up with the bus before consuming starts. Default 10 000. */
  catchUpTimeoutMs?: number;
}
