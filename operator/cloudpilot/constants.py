"""Every tunable of CloudPilot in one place, each with the reason for its value."""

from typing import Final

API_GROUP: Final = "cloudpilot.io"
API_VERSION: Final = "v1alpha1"
KIND: Final = "CloudPilotPool"
PLURAL: Final = "cloudpilotpools"

ANNOTATION_PREFIX: Final = "cloudpilot.io"
"""kopf keeps its bookkeeping (handler progress, last-handled spec) in annotations under
this prefix instead of ``status.kopf``, so that ``status`` belongs to CloudPilot alone."""

FINALIZER: Final = "cloudpilot.io/finalizer"
"""Held while a pool may still own VMs, so deleting the pool can destroy them first."""

TAG_POOL: Final = "cloudpilot.io/pool"
TAG_QUEUE: Final = "cloudpilot.io/queue"
TAG_CE: Final = "cloudpilot.io/ce"
TAG_MANAGED_BY: Final = "cloudpilot.io/managed-by"
"""Metadata tags put on every VM where the driver supports them. Ownership needs both the
name prefix and a matching pool tag there, so a hand-made VM with a look-alike name is
never counted, touched or deleted."""

DEFAULT_MAX_LIFETIME: Final = 1_209_600
"""Two weeks, the seed's ``Context_MaxLifetime`` default."""

DEFAULT_BOOT_TIMEOUT: Final = 1_800
"""A VM that is still starting after 30 minutes is taken as stuck: cloud-init and the CVMFS
setup take minutes on a cold image, never half an hour."""

DEFAULT_HALT_GRACE_PERIOD: Final = 300
"""Five minutes between the pilot's end and ``poweroff``, as in DIRAC's template: long
enough for a site admin to log in and look at a pilot that failed."""

DEFAULT_RECONCILE_INTERVAL: Final = 60.0
"""Seconds between two full reconciles of a quiet pool. One list call per cloud account per
interval is the whole steady-state cost, so a minute keeps the cloud API quiet while a
finished pilot is replaced within about a minute."""

DEFAULT_CONVERGING_INTERVAL: Final = 10.0
"""Seconds between reconciles while a pool is still converging (VMs starting, creations
pending), so that progress shows quickly without polling a quiet pool."""

MAX_CONCURRENT_RECONCILES: Final = 64
"""Pools reconciled at the same time by the operator's one scheduler. A reconcile mostly
waits (a shared listing, a create, a status patch), so 64 keeps a 2-core pod busy without
a thousand cycles holding cloud calls and API connections at once; pools sharing an account
share one listing whatever this is. ``operator.maxConcurrentReconciles`` in the chart."""

KOPF_WORKER_LIMIT: Final = 128
"""kopf's per-object workers running at once (``settings.queueing.worker_limit``; kopf's
default is no limit). Why: when the operator starts against pools it has not handled yet
(a first install, pools created while it was down), kopf starts a worker for every pool of
its initial listing at once, and each patches its pool (the finalizer) over a connection of
its own: 880 TLS connections at 2,000 pools, each holding asyncio's 256 KiB read buffer and
OpenSSL's, and a 422 MiB peak. 128 workers bound that (241 MiB, docs/performance.md). The
price: events of other pools wait for a free worker while 128 are busy, and a teardown that
waits between retries holds its worker meanwhile, so deleting more than 128 pools at once
slows the handling of every pool's events until the teardowns end."""

KOPF_IDLE_TIMEOUT: Final = 1.0
"""Seconds a kopf worker waits for its pool's next event before it ends
(``settings.queueing.idle_timeout``; kopf's default is 5). With a bounded number of
workers, an idle one holds a slot: 2,000 pools at start-up take 2,000 / 128 times this long
just to be seen once. Shorter is not better: at 0.1 s the echo of a status write (a
reconcile later) mostly finds its worker gone and queues, a whole pool's body, behind every
pool not yet seen: 10,000 pools then peaked at 724 MiB instead of 526 (docs/performance.md,
"The peak at start-up")."""

SCHEDULER_STOP_TIMEOUT: Final = 5.0
"""Seconds running reconciles may finish when the operator stops (or loses its Lease)
before they are cancelled. Cancelling mid-cycle is safe: the next cycle, in this process
or another, re-reads the cloud."""

HEAP_TRIM_INTERVAL: Final = 30.0
"""Seconds between two returns of the C heap's free pages to the system
(:mod:`cloudpilot.heap_trim`): often enough that a burst of watch events leaves no lasting
RSS, rare enough to cost nothing (a few milliseconds in a worker thread)."""

MAX_REPLICAS: Final = 10_000
"""Most VMs one queue may ask for (``spec.replicas``, ``queues[].replicas``). The largest
DIRAC cloud CEs run a few thousand VMs; ten thousand on one queue is beyond any site's
quota, while a typo such as ``1000000000`` is refused at apply time instead of being
served (the CRD and the operator's model both hold this bound)."""

MAX_LIMIT: Final = 100_000
"""Largest ``limits.maxInstances`` / ``limits.maxStarting``, on the pool or a queue: a cap,
so it may exceed one queue's ``MAX_REPLICAS`` (a pool has up to 64 queues), but no cloud
account holds a hundred thousand VMs."""

MAX_LIFETIME_SECONDS: Final = 31_536_000
"""Largest ``context.maxLifetime``: a year. Pilots run for days; the bound also keeps the
value within what date arithmetic can hold (a huge number would overflow it)."""

MAX_BOOT_TIMEOUT: Final = 86_400
"""Largest ``bootTimeout``: a day. A VM still booting after that is stuck, whatever the
image."""

MAX_USER_DATA_LIMIT: Final = 1_048_576
"""Largest ``context.userDataLimit``: 1 MiB, four times the most generous provider (GCE's
256 KiB metadata value); EC2 takes 16 KiB, OpenStack 64 KiB."""

MAX_BACKOFF_SECONDS: Final = 86_400.0
"""Largest ``backoff.initialSeconds`` / ``maxSeconds``: a day between retries."""

DEFAULT_MAX_CREATES_PER_CYCLE: Final = 500
"""Most VMs one pool asks the cloud for in one reconcile (all its queues together). A pool
scaling up by thousands converges over several cycles, each a bounded amount of work, and
the other pools are reconciled between them. 500 is one EC2 batch, which EC2 starts in
a few seconds. ``operator.maxCreatesPerCycle`` in the chart."""

DEFAULT_CREATE_PARALLELISM: Final = 8
"""Concurrent create/destroy calls per cloud account where the provider has no batch API.
libcloud is synchronous, so each call holds a worker thread."""

DEFAULT_BATCH_SIZE: Final = 1000
"""The site's cap on one batched create (EC2 ``MinCount/MaxCount``). Each provider has its
own maximum (:mod:`cloudpilot.cloud.batching`: EC2 1,000, one VM per call elsewhere); this
only lowers it. 1,000 leaves EC2's maximum in force, so a cycle's scale-up of a queue (at
most ``maxCreatesPerCycle``) is one call; a site often at its quota may lower it, since a
batch is all-or-nothing."""

LOOKUP_CACHE_TTL: Final = 3_600.0
"""Seconds a resolved ``name:`` image, flavor or network id is trusted. Catalogues change
rarely; a stale id that the cloud rejects is dropped from the cache at once."""

PENDING_CREATE_TTL: Final = 600.0
"""Seconds a VM that was created but not yet seen in a listing is still counted. Eventually
consistent clouds show new VMs within seconds; past ten minutes the VM never came."""

DELETING_TTL: Final = 900.0
"""Seconds a VM we asked to destroy is not counted as live while it still lists (EC2 keeps
``shutting-down`` instances for a minute or more). After that it is destroyed again."""

MAX_RECONCILE_INTERVAL: Final = PENDING_CREATE_TTL / 2
"""The longest reconcile interval the operator accepts (300 s). A shared listing may serve a
pool for up to one interval (an account's tick, :mod:`cloudpilot.account_tick`), and what
it lacks of the pool's own creations is counted from ``memory.pending`` for
``PENDING_CREATE_TTL``: the interval must stay well inside that, or a creation could be
forgotten before any listing served to the pool shows it, and be made again."""

BACKOFF_INITIAL: Final = 10.0
BACKOFF_MAX: Final = 600.0
"""Capped exponential back-off for failed creations: 10 s, 20 s, 40 s ... 10 minutes."""

BACKOFF_INITIAL_TRANSIENT: Final = 2.0
"""A throttled, failed (5xx) or timed-out call is retried sooner: 2 s, 4 s, 8 s ... (with
jitter, up to BACKOFF_MAX). Such faults pass within seconds; waiting 10 s for the first
retry made a 50-VM pool take minutes under a handful of them (docs/performance.md)."""

TRANSIENT_LISTING_RETRY: Final = 3.0
"""Seconds before a cycle whose listing failed for a transient reason runs again."""

CLOUD_CALL_TIMEOUT: Final = 10.0
"""Seconds one cloud API call may take before it is abandoned (libcloud's own default is
60 s). A call that hangs, behind a dead connection, must not hold a pool's cycle for a
minute; a pool can still set ``driver.timeout`` for a slow cloud."""

# -- the operator's own Kubernetes client (cloudpilot.kube.client) ---------------------------

KUBE_CALL_TIMEOUT: Final = 10.0
"""Seconds one Kubernetes API call may take, all its retries included. A status write or a
Secret read that hangs behind a dead connection must not hold a pool's cycle; kopf's own
requests and the API server's one-minute request timeout are far longer than any answer
a healthy server gives to these small requests."""

KUBE_RETRY_ATTEMPTS: Final = 4
KUBE_RETRY_BACKOFF: Final = 0.25
KUBE_RETRY_BACKOFF_MAX: Final = 4.0
"""429 and 5xx answers (and a connection that fails) are retried up to 4 attempts in all,
0.25 s, 0.5 s, 1 s apart (or the server's ``Retry-After``, at most 4 s), always inside the
call's timeout: an API server restarting or shedding load (priority and fairness) answers
again within seconds, and longer waits belong to the reconcile's own back-off."""

KUBE_RELOGIN_INTERVAL: Final = 30.0
"""At most one fresh login (a 401) per 30 s: a rotated token is re-read at once, but a token
the API server keeps refusing (an RBAC binding removed, a revoked account) does not make
every call read the token files and open a new connection again; those calls get the 401."""

BACKOFF_INITIAL_BAD_CREDENTIALS: Final = 60.0
BACKOFF_MAX_BAD_CREDENTIALS: Final = 1_800.0
"""Rejected credentials need a human; retrying them every 10 s only fills audit logs."""

MAX_STATUS_INSTANCES: Final = 200
"""``status.instances`` is bounded: a pool of 2,000 pilots must not make a multi-megabyte
object that every watcher of the resource has to download on each change."""

MAX_VM_EVENTS_PER_CYCLE: Final = 20
"""Per-VM events per reconcile and reason; past that one summary event says how many more,
so a scale-up of 500 does not flood the events API."""

MAX_MESSAGE_LENGTH: Final = 512
"""Error messages from clouds are cut to this length: clouds echo whole requests back, and
a request may carry user data (and with it the pilot proxy)."""

DEFAULT_UNREACHABLE_STALL_AFTER: Final = 600.0
"""Seconds an endpoint may refuse connections (or have no address) before the pool is
Stalled: long enough for a restart or a network blip, short enough that a wrong host or
port gets a human's attention the same morning. Retries go on after it."""

# -- DiracX: pilots whose VM vanished unwatched (cloudpilot.dirac.vanished) ----------------
DEFAULT_DIRAC_VANISHED_GRACE: Final = 600.0
"""Seconds after its registration before a pilot whose VM no listing shows is marked
``Deleted`` by a sweep. A listing can lag a fresh VM by seconds, and a restarted operator
has lost the record of the creations it had not seen listed yet; ``PENDING_CREATE_TTL``
(ten minutes) is how long such a VM is waited for anyway. ``CLOUDPILOT_DIRAC_VANISHED_GRACE``."""

DIRAC_SWEEP_INTERVAL: Final = 600.0
"""Seconds between two sweeps of a pool's live pilots in DiracX (one paged search each),
besides the sweep at the first complete listing of every leadership term. While the
operator runs, its own pilot table ends pilots as their VMs go; the sweep is for what
happened unwatched, so every ten minutes is plenty and costs one request per pool."""

DIRAC_SWEEP_RETRY: Final = 60.0
"""Seconds before a sweep that failed (DiracX down, its budget spent) is tried again."""

# -- the closed loop (cloudpilot.outcomes, cloudpilot.capacity) ----------------------------
DEFAULT_FIZZLE_SECONDS: Final = 600
"""A pilot VM that halts sooner than this after launch found no work (Vcycle's
``fizzle_seconds`` default: a pilot that matched a job runs for longer than ten minutes)."""
DEFAULT_FIZZLE_BACKOFF_SECONDS: Final = 600
"""The first hold after fizzles: one fizzle-time, so the probe that follows meets a task
queue that had time to fill (Vcycle's ``backoff_seconds`` plays this role)."""
DEFAULT_FIZZLE_MAX_BACKOFF_SECONDS: Final = 3_600
"""Longest hold: an hour. A task queue that stays empty costs one probe VM an hour."""
DEFAULT_OUTCOME_WINDOW_SECONDS: Final = 3_600
"""The recent window of ended pilots that status counts (and efficiency covers)."""
CAPACITY_PROBE_SECONDS: Final = 600.0
"""How long a learned quota is trusted before the pool asks for its whole demand again
(once) to find out whether the quota was raised or other tenants freed room."""
