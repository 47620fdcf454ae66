"""Descriptions of the Config fields that ``fileproc_wsgi/config.py`` has no comment for yet.

Each entry belongs in ``config.py`` as a comment above its field; once it is there, the
documentation build warns (and so fails) until the entry is deleted here, so the text is
never kept in two places. Plain prose, as a comment in ``config.py`` is.
"""

PENDING: dict[str, str] = {
    "database_url": (
        "SQLAlchemy URL of the store; empty: sqlite:///./.fileproc/fileproc.db of the working directory. "
        "SQLite runs in WAL mode with a busy timeout; PostgreSQL through postgresql+psycopg://..."
    ),
    "source_roots": (
        'Root name to directory, or to a storage ("django:default"). '
        "FILEPROC_SOURCE_ROOTS=default=media,static=static, or JSON."
    ),
    "storage": (
        "Where results are stored: a directory (a path or file:///dir) or s3://bucket/prefix; "
        "empty: ./.fileproc/results."
    ),
    "public_url": (
        "Where stored results are reachable (point it at nginx or a CDN); empty: <prefix>/files/, "
        "served by the middleware."
    ),
    "prefix": "The URL path the middleware answers under.",
    "secret": ("Enables POST <prefix>/register and signs its requests (HMAC-SHA256); 16 characters or more."),
    "registrar_url": (
        "Template hosts only: register on this processing server (https://img.example.com/_fp), "
        "signed with secret."
    ),
    "allowed_hosts": (
        "Hosts that http(s) sources may be fetched from (img.example.com, *.example.com, name:port), "
        "and the exact names of buckets that s3:// sources may read; comma-separated in "
        "FILEPROC_ALLOWED_HOSTS."
    ),
    "max_redirects": "Redirects an http(s) download follows, each hop checked against allowed_hosts again.",
    "allow_private_addresses": (
        "Let http(s) sources resolve to loopback, private or link-local addresses (tests and trusted "
        "networks only)."
    ),
    "s3_region": "The region of the S3 endpoint; empty: what boto3 resolves.",
    "presign_seconds": (
        "With S3 storage: answer with a presigned URL valid this long, behind a temporary redirect "
        "with no-store (private buckets); 0: public URLs."
    ),
    "redirect_status": ("301, 302, 303, 307 or 308; temporary ones are sent with Cache-Control: no-cache."),
    "serve_results": "Answer with the result's bytes instead of a redirect to it.",
    "wait_timeout": (
        "Seconds a request waits for a result another worker is making, or for a core, before a 503."
    ),
    "lease_seconds": (
        "Seconds a claim on a job lasts before another worker may take it over; must be longer than "
        "max_processing_seconds."
    ),
    "retry_after": (
        "The Retry-After sent with a 503, in seconds (a failure waiting for its retry sends the time left)."
    ),
    "cache_size": "Registrations remembered in-process per registrar.",
    "source_check_interval": (
        "Seconds a warm registration trusts that its source file is unchanged before one stat checks "
        "again (0: every render); what purge or gc --delete removed is forgotten by every process within it."
    ),
    "max_source_bytes": (
        "Bytes of a source, refused before the file is read (above any camera JPEG or phone HEIC)."
    ),
    "max_source_pixels": (
        "Pixels of a source, checked on its header (and on the header of the page asked for), so that a "
        "decompression bomb never allocates them; a 48-megapixel phone photo passes."
    ),
    "max_output_pixels": (
        "Pixels of a result and of every step on the way that enlarges the image (a 5000x5000 result); "
        "stops upscale from asking for gigabytes."
    ),
    "max_output_side": (
        "The longest side of a result in pixels: any srcset width fits (a 4K screen at 2x is 7680 px), "
        "thin strips and sizes that encoders refuse do not."
    ),
    "max_source_frames": (
        "Frames of an animation kept animated, and the furthest page N read: reaching page N walks the "
        "frames before it, so this bounds the walk whatever the file claims."
    ),
    "max_processing_seconds": (
        "Seconds per job; with isolate_jobs the worker process is killed when they are up, even inside "
        "one native call. The first two overruns are retried (503), the third is permanent (422). Must be "
        "shorter than lease_seconds."
    ),
    "max_concurrent_jobs": (
        "Jobs under way at once in one process, of which one per CPU core runs; a request that would "
        "start one more gets a 503 at once, never queued. Above a browser's 6 connections per host."
    ),
    "max_register_bytes": (
        "Bytes of a POST <prefix>/register body, refused before it is read when the length is stated."
    ),
    "max_job_memory": (
        "Address space per job (RLIMIT_AS in its worker, at least 512 MiB): an allocation past it refuses "
        "the job (422) instead of waking the host's OOM killer."
    ),
    "worker_max_jobs": (
        "A worker process is replaced after this many jobs (and when it holds more than 512 MiB after one), "
        "so that a library's leaks do not grow for ever."
    ),
    "document_cache_bytes": "Past this, the least recently used PDFs of document_cache are removed.",
    "metrics_allowed": (
        'The client addresses or networks ("10.0.0.0/8") that metrics_path answers; any other gets a 404.'
    ),
}
