import { describe, expect, it } from 'vitest';
import { Cancellation } from '../../src/cancellation.js';

describe('Cancellation (AbortController semantics, without an AbortSignal)', () => {
  it('aborts once, with the given reason; listeners run once, in the order added', () => {
    const cancel = new Cancellation();
    const calls: string[] = [];
    cancel.signal.addEventListener('abort', () => calls.push('first'));
    cancel.signal.addEventListener('abort', () => calls.push(`second:${String(cancel.reason)}`));
    expect(cancel.aborted).toBe(false);
    cancel.abort('gone');
    cancel.abort('again');
    expect(cancel.aborted).toBe(true);
    expect(cancel.reason).toBe('gone');
    expect(calls).toEqual(['first', 'second:gone']);
  });

  it('without a reason, the reason is an AbortError, as AbortController gives', () => {
    const cancel = new Cancellation();
    cancel.abort();
    const reason = cancel.reason as DOMException;
    expect(reason).toBeInstanceOf(DOMException);
    expect(reason.name).toBe('AbortError');
    const native = new AbortController();
    native.abort();
    expect(reason.name).toBe((native.signal.reason as DOMException).name);
  });

  it('a removed listener does not run; one added twice runs once; one added after the abort never runs', () => {
    const cancel = new Cancellation();
    let removed = 0;
    let twice = 0;
    let late = 0;
    const onRemoved = () => {
      removed += 1;
    };
    const onTwice = () => {
      twice += 1;
    };
    cancel.addEventListener('abort', onRemoved);
    cancel.addEventListener('abort', onTwice);
    cancel.addEventListener('abort', onTwice);
    cancel.removeEventListener('abort', onRemoved);
    cancel.abort();
    cancel.addEventListener('abort', () => {
      late += 1;
    });
    expect({ removed, twice, late }).toEqual({ removed: 0, twice: 1, late: 0 });
  });

  it('every listener runs even if one throws; the first error is rethrown', () => {
    const cancel = new Cancellation();
    let after = false;
    cancel.addEventListener('abort', () => {
      throw new Error('listener failed');
    });
    cancel.addEventListener('abort', () => {
      after = true;
    });
    expect(() => cancel.abort()).toThrow('listener failed');
    expect(after).toBe(true);
    expect(cancel.aborted).toBe(true);
  });
});
