#!/usr/bin/env python3
"""Where a process's CPU goes, by component, from a `perf record --call-graph dwarf` profile.

    perf_components.py PERF.DATA [--us-per-request US] [--unit req|key]

Every sample is put in one component by its leaf frame and, where the leaf alone cannot say
(libcrypto serves TLS and JOSE alike; a kernel sample is a system call, a context switch or an
interrupt), by the frames above it. A second table gives inclusive shares of named pieces of work
(a sample counts for each of them on its stack), and a third the shares by thread role. With
--us-per-request (the process's CPU per request over the same window, e.g. kms_load's
`server_cpu_us_per_request`), each share is also given in microseconds per request (or per
--unit: "key" for kmsd's CPU per key created or bound).
bench/run-kms-load.sh --perf runs it on kmsd's profile of each scenario.
"""
import argparse
import collections
import re
import subprocess
import sys

SYSCALL = re.compile(r"^(?:__x64_sys|__do_sys|__se_sys|ksys)_(\w+)")

# (component, test on the sample's frames, leaf first) in order: the first that matches wins.
KERNEL_SYSCALLS = [
    ("kernel: futex (thread wake-ups and waits)", {"futex"}),
    ("kernel: epoll", {"epoll_wait", "epoll_pwait", "epoll_pwait2", "epoll_ctl"}),
    ("kernel: TCP send (loopback: the receiver's softirq too)",
     {"write", "writev", "sendto", "sendmsg", "sendmmsg"}),
    ("kernel: TCP receive", {"read", "readv", "recvfrom", "recvmsg"}),
    ("kernel: file I/O and sync (database)",
     {"pwrite64", "pread64", "fdatasync", "fsync", "lseek", "fcntl", "openat", "close",
      "ftruncate", "unlink", "newfstatat", "fstat"}),
    ("kernel: memory (mmap, munmap, brk, madvise)", {"mmap", "munmap", "brk", "madvise",
                                                     "mprotect"}),
]

LIBRARY_COMPONENTS = [
    ("libsqlite3", "SQLite"),
    ("libPocoDataSQLite", "Poco::Data (around SQLite)"),
    ("libPocoData", "Poco::Data (around SQLite)"),
    ("libPocoJSON", "JSON: Poco::JSON"),
    ("libjansson", "JOSE: cjose's JSON (jansson)"),
    ("libcjose", "JOSE: cjose"),
    ("libsofthsm2", "SoftHSM2"),
    ("libPocoNetSSL", "HTTP: Poco Net/NetSSL"),
    ("libPocoNet", "HTTP: Poco Net/NetSSL"),
    ("libPocoFoundation", "Poco Foundation (strings, streams, Var)"),
]

MALLOC = re.compile(r"^(malloc|free|cfree|calloc|realloc|_int_malloc|_int_free|_int_realloc|"
                    r"malloc_consolidate|unlink_chunk|tcache_\w+|__libc_\w*(malloc|free)|"
                    r"operator new|operator delete|_int_memalign|__malloc_\w+|arena_\w+|"
                    r"sysmalloc|systrim|__default_morecore)")
LIBC_MEM = re.compile(r"^__(mem|str|wmem)\w+|^(memcpy|memmove|memset|memcmp|strlen|strcmp)")
LOCKS = re.compile(r"pthread_mutex|pthread_cond|__lll_lock|__lll_unlock|pthread_rwlock|"
                   r"__futex|pthread_spin|sem_")

# Inclusive: pieces of work, by a frame's symbol (a regular expression) anywhere on the stack, and
# when a third element is given, only under a frame matching that too.
WORK = [
    ("request workers: the KmsServer handler (all its work)", r"KmsRoutes::Serve|KmsServer::Handler::"),
    ("  KmsService::Handle (the protocol)", r"KmsService::Handle\b"),
    ("  open the sealed request (jose::DecryptDir)", r"jose::DecryptDir"),
    ("  seal the answer (jose::EncryptDir)", r"jose::EncryptDir"),
    ("  JWT verification", r"Jwt\w*::Verify|VerifyJwt|JwtVerifier"),
    ("  Poco::JSON parse", r"Poco::JSON::Parser"),
    ("  Poco::JSON stringify", r"Poco::JSON::(Stringifier|Object::stringify|Array::stringify)"),
    ("  replay check", r"Replay\w*::"),
    ("  hand-off to the audit writer, waiting for its commit",
     r"KmsService::Audit$|AuditWriter::(Append|Enqueue|Submit|Wait)"),
    ("  the HSM (wrap, unwrap)", r"^strongroom::hsm::"),
    ("  SQLite on the request path", r"^sqlite3", r"KmsRoutes::Serve|KmsServer::Handler::"),
    ("HTTPS edge thread (accept, TLS read of heads, epoll)",
     r"HttpsServer::Edge::(Loop|Run\(\)::\{lambda\(\)#2\})"),
    ("TLS: SSL_read", r"^SSL_read"),
    ("TLS: SSL_write", r"^SSL_write"),
    ("TLS: handshakes", r"^SSL_do_handshake|^SSL_accept|tls_process_client_hello"),
    ("Poco HTTP request/response parsing and writing", r"Poco::Net::HTTP(Server)?(Request|Response|"
                                                       r"HeaderStream|Message|ServerConnection)"),
    ("audit writer thread (group commit)", r"AuditWriter::Run"),
    ("  SQLite prepare", r"sqlite3_prepare", r"AuditWriter::Run"),
    ("  SQLite step", r"sqlite3_step", r"AuditWriter::Run"),
    ("  fsync/fdatasync", r"__x64_sys_(fdatasync|fsync)|fdatasync|fsync", r"AuditWriter::Run"),
    ("audit syncer thread (fsync of the log, compaction)", r"AuditWriter::Sync"),
    ("any SQLite statement compiled (sqlite3_prepare: not kept between uses)", r"sqlite3_prepare"),
    ("any SQLite", r"^sqlite3"),
    ("any malloc/free", MALLOC.pattern),
]

# The edge's threads are lambdas in HttpsServer::Edge::Run (#1 the workers, #2 the edge loop) when
# Work() and Loop() are inlined into them.
ROLES = [
    ("HTTPS edge (one thread)", r"HttpsServer::Edge::(Loop|Run\(\)::\{lambda\(\)#2\})"),
    ("request workers", r"HttpsServer::Edge::(Work|Serve|Run\(\)::\{lambda\(\)#1\})"),
    ("audit writer (one thread)", r"AuditWriter::Run"),
    ("audit syncer (one thread: fsync of the log, compaction)", r"AuditWriter::Sync"),
]


# A system call's user-space wrapper, for samples taken before the kernel dispatched it.
WRAPPERS = [
    (re.compile(r"futex|lll_lock|lll_unlock|pthread_cond|pthread_mutex"), "futex"),
    (re.compile(r"epoll"), "epoll_wait"),
    (re.compile(r"pwrite|pread|fdatasync|fsync|fcntl|lseek"), "pwrite64"),
    (re.compile(r"libc_read|recv"), "read"),
    (re.compile(r"libc_write|send|writev"), "write"),
    (re.compile(r"mmap|munmap|madvise|brk"), "mmap"),
]
SCHEDULING = {"finish_task_switch.isra.0", "finish_task_switch", "__schedule", "schedule",
              "__rseq_handle_notify_resume", "asm_sysvec_reschedule_ipi",
              "sysvec_reschedule_ipi"}


def normalized(symbol):
    """glibc's internal aliases (__GI___libc_free) under their public names (__libc_free)."""
    return re.sub(r"^__GI_", "", symbol)


def classify_kernel(frames):
    symbols = [s for s, d in frames if "kernel" in d]
    if any(s in SCHEDULING for s in symbols):
        return "kernel: scheduling (context switches)"
    name = None
    for s in symbols:
        match = SYSCALL.match(s)
        if match:
            name = match.group(1)
            break
    if name is None and any(s == "do_syscall_64" for s in symbols):
        user = [normalized(s) for s, d in frames if "kernel" not in d]
        name = user[0] if user else "unknown"
        for pattern, syscall in WRAPPERS:
            if pattern.search(name):
                name = syscall
                break
    if name is not None:
        for component, names in KERNEL_SYSCALLS:
            if name in names:
                return component
        return "kernel: other system calls (" + name + ")"
    if any(s in ("exc_page_fault", "do_user_addr_fault") for s in symbols):
        return "kernel: page faults"
    return "kernel: interrupts and other"


def classify(frames):
    """One component for a sample; frames are (symbol, dso), leaf first."""
    symbol, dso = frames[0]
    symbol = normalized(symbol)
    if "kernel" in dso:
        return classify_kernel(frames)
    if MALLOC.match(symbol):
        return "malloc/free"
    if LIBC_MEM.match(symbol):
        return "libc memcpy/memset/str*"
    if LOCKS.search(symbol):
        return "libc locks and condition variables"
    if symbol.startswith("std::") or symbol.startswith("__gnu_cxx::"):
        return "C++ library (strings, containers, streams)"
    if symbol.startswith("Poco::JSON::"):
        return "JSON: Poco::JSON"
    if symbol.startswith("Poco::Data::"):
        return "Poco::Data (around SQLite)"
    if symbol.startswith("Poco::Net::"):
        return "HTTP: Poco Net/NetSSL"
    if symbol.startswith("Poco::"):
        return "Poco Foundation (strings, streams, Var)"
    for library, component in LIBRARY_COMPONENTS:
        if library in dso:
            return component
    if "libcrypto" in dso or "libssl" in dso:
        stack = [s for s, _ in frames]
        for s in stack:
            if s.startswith(("SSL_read", "SSL_write", "SSL_do_handshake", "SSL_accept",
                             "SSL_shutdown", "ssl3_", "tls_")):
                return "TLS: OpenSSL (records, AES-GCM of the connection)"
            if "jose::" in s or s.startswith("cjose_"):
                return "JOSE: OpenSSL (AES-GCM, signatures of the KMS messages)"
            if "Jwt" in s or "jwt::" in s:
                return "JWT: OpenSSL (token signatures)"
        return "OpenSSL, other"
    if "libc.so" in dso:
        return "libc, other"
    if "libstdc++" in dso:
        return "C++ library (strings, containers, streams)"
    if symbol.startswith("strongroom::jose::"):
        return "JOSE: Strongroom's own (compact parsing, base64url)"
    if symbol.startswith("strongroom::http::"):
        return "HTTPS edge: Strongroom's own"
    if symbol.startswith("strongroom::"):
        return "Strongroom's own code, other"
    return "other (" + dso.rsplit("/", 1)[-1] + ")"


def read_samples(path):
    """Yields each sample's frames (symbol, dso), leaf first."""
    script = subprocess.Popen(
        ["perf", "script", "-i", path, "-F", "comm,tid,ip,sym,dso"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, errors="replace")
    frames = []
    frame = re.compile(r"^\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$")

    def resolved(frames):
        # An inlined frame's library is that of the next real frame above it.
        dso = ""
        for i in range(len(frames) - 1, -1, -1):
            if frames[i][1] == "inlined":
                frames[i] = (frames[i][0], dso)
            else:
                dso = frames[i][1]
        return frames

    for line in script.stdout:
        if not line.strip():
            if frames:
                yield resolved(frames)
            frames = []
            continue
        match = frame.match(line)
        if match:
            symbol = re.sub(r"\+0x[0-9a-f]+$", "", match.group(1))
            frames.append((symbol, match.group(2)))
    if frames:
        yield resolved(frames)
    script.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--us-per-request", type=float, default=0)
    parser.add_argument("--unit", default="req", help="what --us-per-request is per (req, key)")
    args = parser.parse_args()

    components = collections.Counter()
    work = collections.Counter()
    roles = collections.Counter()
    work_patterns = [(entry[0], re.compile(entry[1]), re.compile(entry[2]) if len(entry) > 2 else None)
                     for entry in WORK]
    role_patterns = [(name, re.compile(pattern)) for name, pattern in ROLES]
    total = 0
    for frames in read_samples(args.data):
        total += 1
        components[classify(frames)] += 1
        symbols = [normalized(s) for s, _ in frames]
        for name, pattern, under in work_patterns:
            if any(pattern.search(s) for s in symbols) and (
                    under is None or any(under.search(s) for s in symbols)):
                work[name] += 1
        role = "other threads"
        for name, pattern in role_patterns:
            if any(pattern.search(s) for s in symbols):
                role = name
                break
        roles[role] += 1
    if total == 0:
        print("no samples in " + args.data)
        return 1

    def line(name, count):
        share = 100.0 * count / total
        text = f"{share:6.1f}%"
        if args.us_per_request > 0:
            text += f" {share * args.us_per_request / 100:8.1f} us/{args.unit}"
        return f"{text}  {name}"

    print(f"# {total} samples; components (each sample once, by its leaf and what called it)")
    for name, count in components.most_common():
        print(line(name, count))
    print("# inclusive: a sample counts for every piece of work on its stack")
    for entry in WORK:
        print(line(entry[0], work[entry[0]]))
    print("# by thread role")
    for name, count in roles.most_common():
        print(line(name, count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
