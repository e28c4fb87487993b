"""The mtlsd image, built offline for the tests that run it (docs/injection.md, "Image").

The base image is made here rather than pulled: `debootstrap --variant=minbase bookworm`
into build/image/rootfs, imported with `podman import` as
docker.io/library/debian:bookworm-slim, then `podman build --isolation=chroot
--pull=never -f deploy/Dockerfile`. Everything podman keeps (its storage, its run state,
the base tarball) lives under build/image/, never in the system's podman store: a second
run on the same machine reuses the base and podman's layer cache. Containers run with
runc (crun refuses this kind of machine's hybrid cgroups) and ulimits below the
machine's hard limits.

A machine that cannot build the image fails the tests that need it with the reason; they
are not skipped."""

import fcntl
import os
import shutil
import subprocess
import time

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORK = os.path.join(TOP, "build", "image")
BASE = "docker.io/library/debian:bookworm-slim"
TAG = "localhost/mtlsd:test"
MIRROR = os.environ.get("MTLSD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
NEEDED = ("podman", "debootstrap", "runc")

_built = False


def podman_base():
    return ["podman", "--root", os.path.join(WORK, "storage"), "--runroot",
            os.path.join(WORK, "run"), "--storage-driver", "vfs", "--cgroup-manager",
            "cgroupfs", "--runtime", "runc"]


# What every container needs on this kind of machine (see the module comment).
RUN_LIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]


def podman(*args, check=True, timeout=600, **kw):
    r = subprocess.run(podman_base() + list(args), capture_output=True, text=True,
                       timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])}... failed ({r.returncode}):\n"
                             f"{r.stderr[-4000:]}")
    return r


def _have_base():
    return podman("image", "exists", BASE, check=False).returncode == 0


def _make_base(log):
    rootfs = os.path.join(WORK, "rootfs")
    tarball = os.path.join(WORK, "bookworm-minbase.tar")
    if not os.path.exists(tarball):
        shutil.rmtree(rootfs, ignore_errors=True)
        r = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", rootfs, MIRROR],
                           capture_output=True, text=True, timeout=1200)
        log.write(r.stdout + r.stderr)
        if r.returncode != 0:
            raise AssertionError(f"debootstrap failed ({r.returncode}); is {MIRROR} reachable?"
                                 f"\n{r.stderr[-3000:]}")
        subprocess.run(["tar", "-C", rootfs, "-cf", tarball + ".part", "."], check=True,
                       timeout=600)
        os.replace(tarball + ".part", tarball)
        shutil.rmtree(rootfs, ignore_errors=True)
    with open(tarball, "rb") as f:
        podman("import", "-", BASE, stdin=f)


def ensure_image():
    """Builds (or finds, in podman's cache) the image TAG; returns the build time in
    seconds. Several test processes may call it at once: one builds, the others wait."""
    global _built
    missing = [t for t in NEEDED if shutil.which(t) is None]
    if os.geteuid() != 0 or missing:
        raise AssertionError(f"the image tests need root and {missing or 'nothing else'}: "
                             "tests/run.sh installs podman, debootstrap and runc")
    if not os.path.exists(os.path.join(TOP, ".deps", "boringssl", "BORINGSSL_REVISION")):
        raise AssertionError("no BoringSSL tree in .deps/: run scripts/fetch-boringssl.sh")
    os.makedirs(WORK, exist_ok=True)
    start = time.monotonic()
    with open(os.path.join(WORK, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(os.path.join(WORK, "build.log"), "a") as log:
            if not _have_base():
                _make_base(log)
            if not _built:
                r = podman("build", "--isolation=chroot", "--pull=never", "-f",
                           os.path.join(TOP, "deploy", "Dockerfile"), "-t", TAG, TOP,
                           check=False, timeout=1800)
                log.write(r.stdout + r.stderr)
                if r.returncode != 0:
                    raise AssertionError(f"podman build failed ({r.returncode}):\n"
                                         f"{r.stderr[-4000:]}")
                # Every build leaves the previous image's layers behind (vfs copies whole
                # trees): keep the base and the builder cache, drop what nothing uses.
                podman("image", "prune", "-f", check=False)
                _built = True
    return time.monotonic() - start


def image_size_bytes(tag=TAG):
    r = podman("image", "inspect", "--format", "{{.Size}}", tag)
    return int(r.stdout.strip())
