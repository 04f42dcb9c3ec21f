import { describe, expect, it } from 'vitest';
import { CircuitBreaker } from '../../src/upstream/breaker.js';

describe('CircuitBreaker', () => {
  it('opens after 3 consecutive failures, lets exactly one probe through after 30 s, and closes on its success', () => {
    let now = 0;
    const breaker = new CircuitBreaker({ now: () => now });
    breaker.failure();
    breaker.success(); // a success in between resets the count
    for (let i = 0; i < 3; i += 1) breaker.failure();
    expect(breaker.state).toBe('open');
    expect(breaker.tryAcquire().allowed).toBe(false);
    now += 30_000;
    expect(breaker.tryAcquire()).toEqual({ allowed: true, probe: true });
    expect(breaker.tryAcquire().allowed).toBe(false); // one probe at a time
    breaker.success();
    expect(breaker.state).toBe('closed');
  });

  it('a probe that never reports gives way to a new one after 30 s, so the breaker cannot stay shut', () => {
    let now = 0;
    const breaker = new CircuitBreaker({ now: () => now });
    for (let i = 0; i < 3; i += 1) breaker.failure();
    now += 30_000;
    expect(breaker.tryAcquire()).toEqual({ allowed: true, probe: true });
    now += 29_999;
    expect(breaker.tryAcquire().allowed).toBe(false);
    now += 1;
    expect(breaker.tryAcquire()).toEqual({ allowed: true, probe: true });
  });
});
