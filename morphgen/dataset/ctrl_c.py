"""Ctrl-C in `morphgen render` (and `morphgen fit`'s workers): one line from the command,
whatever it meets.

A Ctrl-C goes to the terminal's whole process group: the main process and each worker
(and the background helper) receive it at once. What each does with it:

- **Workers** ignore it (`ignore_ctrl_c`) but inside a task (`interruptible`): one starting
  up or waiting for a task would otherwise print the traceback of its KeyboardInterrupt
  (multiprocessing's). A child starts with it held (`ctrl_c_held`, `submit_held`: a signal
  mask survives fork and exec) until it ignores it.
- **The main process** says the one line and shuts the pool down; `latched_ctrl_c` makes
  sure it does. Pools whose queued tasks are worth nothing once the command stops (`fit`'s
  photos, the landmark finder's images) end their workers first (`end_workers`): a pool's
  shutdown lets each worker finish the tasks already in its call queue, and the landmark
  finder's pool every task it was given (48 s after a Ctrl-C on CFP). Python raises
  KeyboardInterrupt wherever the main thread is when it next checks for signals, and some
  places swallow it: a ``__del__``, a ctypes callback (numba compiling a kernel is one), C
  code that clears errors. The command would go on to the end, or print "Exception
  ignored ... KeyboardInterrupt" and go on. The latch remembers the Ctrl-C, and the run
  raises it again where it next looks (`CtrlCLatch.check`).
"""
from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def ignore_ctrl_c() -> None:
    """Ctrl-C ignored by this child process (a worker but while it runs a task,
    `interruptible`; the prefill helper throughout), then released (it started held)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.unraisablehook = _quiet_keyboard_interrupt(sys.unraisablehook)
    if hasattr(signal, "pthread_sigmask"):  # not on Windows (whose workers are spawned)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _quiet_keyboard_interrupt(hook):
    """`sys.unraisablehook` that says nothing of a KeyboardInterrupt swallowed where Python
    cannot raise it (a ``__del__``, a ctypes callback): the main process says the one line."""
    if getattr(hook, "quiet_keyboard_interrupt", False):
        return hook

    def quiet(unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            hook(unraisable)
    quiet.quiet_keyboard_interrupt = True
    return quiet


@contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Ctrl-C held (blocked) in this thread meanwhile, and delivered after (where the process
    has other threads, one of them may take it meanwhile): the processes this thread forks
    or spawns start with it held, until they ignore it (`ignore_ctrl_c`)."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])  # the mask, unchanged
    try:
        # (a Ctrl-C already caught is raised here, after the change: restored below)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def submit_held(pool, task, *args):
    """``pool.submit(task, *args)`` with Ctrl-C held meanwhile: a spawned pool starts a
    worker in the submit that first needs it, and the worker then starts with Ctrl-C held
    through its seconds of imports, until its initializer ignores it (`ignore_ctrl_c`);
    else a Ctrl-C then prints the traceback of each."""
    with ctrl_c_held():
        return pool.submit(task, *args)


def end_workers(pool) -> None:
    """End a ProcessPoolExecutor's worker processes now, for a command that stops (a
    Ctrl-C, an error) and wants none of the tasks still queued to them: ``shutdown``
    alone lets each worker finish the tasks in the pool's call queue (workers + 1 of
    them, without ``cancel_futures`` all that were submitted). The pool is broken after
    this: shut it down without ``cancel_futures`` and cancel none of its futures (its
    management thread fails them all; on Python 3.11 it raises, with a traceback, on one
    that is already cancelled)."""
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.terminate()


def interruptible(task):
    """A task of our own pools' workers that Ctrl-C interrupts (they ignore it otherwise,
    `ignore_ctrl_c`): the main process then discards its chunk (or photo) and stops the
    pool. One that a swallowed Ctrl-C did not stop returns its result as usual: it is whole."""
    @functools.wraps(task)
    def run_task(*args):
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return task(*args)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    return run_task


class CtrlCLatch:
    """Whether a Ctrl-C came while `latched_ctrl_c` was on (see the module's docstring)."""

    def __init__(self) -> None:
        self.caught = False

    def _on_ctrl_c(self, signum, frame) -> None:
        self.caught = True
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise KeyboardInterrupt if a Ctrl-C came, even one that was swallowed."""
        if self.caught:
            raise KeyboardInterrupt


@contextmanager
def latched_ctrl_c() -> Iterator[CtrlCLatch]:
    """Ctrl-C raises KeyboardInterrupt as usual and is also remembered, meanwhile (the main
    thread's default handler only: a caller's own handler is left alone, and the latch then
    never trips)."""
    latch = CtrlCLatch()
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield latch
        return
    hook = sys.unraisablehook
    signal.signal(signal.SIGINT, latch._on_ctrl_c)
    sys.unraisablehook = _quiet_keyboard_interrupt(hook)
    try:
        yield latch
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.unraisablehook = hook
