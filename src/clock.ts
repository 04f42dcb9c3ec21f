/** The one clock. Domain code asks `services.clock`, so tests can move time without fake timers. */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };
