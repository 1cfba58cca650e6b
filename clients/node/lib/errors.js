'use strict';

class FencelockError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = this.constructor.name;
  }
}

// The server answered an error. Both clients' own error classes are folded into this
// one so that code written against fencelock catches the same thing whichever client
// it was given; the client's original error stays in `cause`.
class RedisReplyError extends FencelockError {}

// -STALE from FENCE.CHECK or FENCE.CALL: a newer holder has already written, so this
// holder's write must not happen (and, for FENCE.CALL, did not).
class StaleTokenError extends RedisReplyError {
  constructor(message, options) {
    super(message, options);
    const m = /^STALE token (\d+) is older than (\d+)/.exec(message);
    this.token = m ? Number(m[1]) : null;
    this.highest = m ? Number(m[2]) : null;
  }
}

// The reason a held lock's signal is aborted with, and what `onLockLost` and the
// 'lost' event receive.
class LockLostError extends FencelockError {
  constructor(lease, reason, event) {
    const why = {
      'extend-refused': 'the server refused to extend the lease (it is over or another owner holds the lock)',
      'release-refused': 'the server says this owner no longer held the lock when it was released',
      event: `the keyspace event "${event}" arrived and the server no longer shows this hold`,
      expired: 'the server no longer shows this hold',
      deadline: 'the lease ran out by this process\'s clock before it could be extended',
      closed: 'the Fencelock instance was closed, which stops the watchdog',
    }[reason];
    super(`lock "${lease.key}" (${lease.kind}) was lost: ${why}`);
    this.key = lease.key;
    this.owner = lease.owner;
    this.kind = lease.kind;
    this.token = lease.token;
    this.reason = reason;
    this.event = event ?? null;
  }
}

class LockNotAcquiredError extends FencelockError {
  constructor(lease, wait) {
    super(`lock "${lease.key}" (${lease.kind}) was not acquired` +
      (wait === undefined || wait === 0 ? ': it is held' : ` within ${wait} ms`));
    this.key = lease.key;
    this.kind = lease.kind;
  }
}

// No reply came within the client-side deadline (the server's WAIT plus replyTimeout).
// fencelock then closes that connection rather than leave a command pending, so a late
// grant cannot arrive to nobody on a live connection.
class ReplyTimeoutError extends FencelockError {
  constructor(command, ms) {
    super(`no reply to ${command} within ${ms} ms; the connection was closed`);
    this.command = command;
    this.timeout = ms;
  }
}

module.exports = {
  FencelockError,
  RedisReplyError,
  StaleTokenError,
  LockLostError,
  LockNotAcquiredError,
  ReplyTimeoutError,
};
