// The shared layout of a channel: a one-page header of 32-bit words (each side's hot words on a
// cache line of their own) followed by the data ring. A leaf module: constants and offsets only.

/** 'DMCH' */
export const MAGIC = 0x48434d44;
export const VERSION = 1;
/** Bytes before the ring. */
export const HEADER = 4096;

// Int32 indices into the header.
export const I_MAGIC = 0;
export const I_VERSION = 1;
export const I_CAPACITY = 2;
/** 0: variable-length records; otherwise every message is exactly this many bytes. */
export const I_SLOT = 3;
/** Producer's line: bytes published so far (mod 2^32), and the consumer's "I sleep on tail" flag. */
export const I_TAIL = 16;
export const I_CONSUMER_SLEEPS = 17;
/** Consumer's line: bytes released so far (mod 2^32), and the producer's "I sleep on head" flag. */
export const I_HEAD = 32;
export const I_PRODUCER_SLEEPS = 33;
/** Each side's identity and state: pid, tid, the thread's start time (low 32 bits), state. */
export const I_PRODUCER = 48;
export const I_CONSUMER = 56;
export const P_PID = 0;
export const P_TID = 1;
export const P_START = 2;
export const P_STATE = 3;
export const STATE_FREE = 0;
export const STATE_ATTACHED = 1;
export const STATE_CLOSED = 2;
/** Taken, identity not yet written: not checked for liveness. */
export const STATE_CLAIMING = 3;

/** A variable-length record: a 4-byte length, the payload, padding to 8. */
export const RECORD_HEADER = 8;
/** A length word telling the reader to skip to the start of the ring. */
export const WRAP = -1;

/** `n` rounded up to a multiple of 8. */
export const pad8 = (n: number): number => (n + 7) & ~7;

/** Byte offsets of the futex words. */
export const TAIL_OFFSET = I_TAIL * 4;
export const HEAD_OFFSET = I_HEAD * 4;
