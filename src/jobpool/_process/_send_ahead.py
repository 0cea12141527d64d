"""When the dispatcher sends a worker its next jobs before the running one ends ("send-ahead").

Why: with one job per worker at a time, a worker that finishes a tiny job sleeps until the
parent has read its reply and written the next job, and the parent pays a wake-up, a ``read``
and a ``write`` per job. With a few jobs already waiting in its pipe, the worker goes straight
on, and the parent reads several replies per wake-up. On trivial jobs that cuts the parent's
time per job by about a third.

The risk is head-of-line blocking: a job waiting behind one that turns out to be long would
wait for it while another worker sits idle. So the dispatcher sends ahead only to a worker whose
recent jobs were short and whose running job is still young, only jobs whose bytes fit in the
pipe without blocking the dispatcher (small ones, or bigger ones where the socket says it has
room: a worker busy with a job does not read its pipe), and it *recalls* them when the running
job grows old: the worker's watch thread takes back every job it has not started and names
them in a ``GIVE_BACK`` message; the dispatcher runs them elsewhere. A worker that dies, is
killed or times out hands its unstarted jobs back the same way (the dispatcher requeues them
itself).

A job sent ahead is marked running when it is sent, as ``ProcessPoolExecutor`` marks the jobs in
its call queue: ``cancel()`` returns False for it. ``Pool.kill()`` on it fails it at once and
recalls it; if the worker started it meanwhile, the worker is killed as for a running job.
"""

from __future__ import annotations

# Jobs that may wait in one worker's pipe behind the one it runs.
AHEAD_JOBS = 4
# More of them for a worker whose jobs are far shorter than the parent's own time per job
# (tens of microseconds): the dispatcher's time per job falls with each job a turn of its loop
# sends (a fifth, from 4 to 16 here), and so many wait behind a running job only while they add
# up to at most AHEAD_SECONDS of the worker's time, which is what a worker left with them at
# the end of a batch holds up.
MOST_AHEAD_JOBS = 16
AHEAD_SECONDS = 0.0005
# Send ahead only to a worker whose recent jobs took less than this, and whose running job
# started less than this ago: longer jobs leave the parent's overhead small anyway.
SHORT_JOB_SECONDS = 0.002
# Take the waiting jobs back once the running job has run this long.
RECALL_AFTER_SECONDS = 0.01
# A worker whose jobs take from SHORT_JOB_SECONDS to this (a map's chunks, say) is sent one job
# behind its running one while that one is younger than this: it goes on with it instead of
# waiting for the parent to read its reply and write the next (milliseconds while the
# parent is busy pickling the next chunks), and the job behind waits for at most one job of a
# few milliseconds, or is recalled.
ONE_AHEAD_SECONDS = RECALL_AFTER_SECONDS / 2
# Only jobs this small (arguments and function bytes) are sent ahead: a worker busy with a job
# does not read its pipe, and a write that filled the pipe would stall the dispatcher.
MAX_AHEAD_BYTES = 8192
# Beyond the first AHEAD_JOBS, only jobs this small: the pipe then holds at most 44 KiB of jobs.
MAX_MORE_AHEAD_BYTES = 1024
# Where the parent can ask a worker's socket how much it holds unread (``_platform.OUTQ``),
# bigger jobs wait too (a map's chunks: otherwise each worker waits for the parent to read its
# reply and write the next chunk), each while the socket has room for twice its bytes and
# AHEAD_MARGIN_BYTES more, so that no write can block (the kernel's overhead on what a Unix
# socket holds is a few percent). A worker's socket is given a send buffer of
# SEND_BUFFER_BYTES for that (Linux doubles it, up to net.core.wmem_max); it costs memory only
# while jobs wait in it.
AHEAD_MARGIN_BYTES = 16384
SEND_BUFFER_BYTES = 1 << 20
# Weight of the newest job in a worker's running average of job times.
JOB_TIME_WEIGHT = 0.25

KILLED_WAITING = "job killed by Pool.kill() before it started; it will not run"
