/**
 * The per-IP limits are sliding windows over epoch minutes: a run that straddles a minute boundary
 * sees part of its count weighted into the next minute. Tests that count up to a limit start well
 * inside a minute (a wait, never an assertion on time).
 */
export async function awayFromWindowEdge(neededMs = 15_000): Promise<void> {
  const intoWindow = Date.now() % 60_000;
  if (intoWindow > 60_000 - neededMs) {
    await new Promise((resolve) => setTimeout(resolve, 60_000 - intoWindow + 100));
  }
}

let sequence = 0;
/** A client address no other test in this file uses (TEST-NET-3 and onwards); limits are per harness prefix. */
export function freshAddress(): string {
  sequence += 1;
  return `203.0.${113 + Math.floor(sequence / 250)}.${(sequence % 250) + 1}`;
}
