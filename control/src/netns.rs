//! Network-namespace handles and `ip netns`-compatible named namespaces.
//!
//! Named namespaces live as bind mounts under [`NETNS_RUN_DIR`], created exactly the way
//! iproute2's `ip netns add` does it, so `ip netns exec NAME ...` run by anyone sharing our
//! mount namespace sees them. Nothing here ever unshares or changes the mount namespace or the
//! network namespace of the calling thread: every namespace switch happens on a short-lived
//! helper thread.
//!
//! Only `std` and `libc` are used; errors carry context but keep the errno reachable through
//! [`crate::netlink::errno`].

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::netlink::{os_error, Netlink};

/// Directory holding the bind-mounted namespace files of named namespaces (`ip netns`).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Longest accepted namespace name (see [`validate_name`]).
pub const MAX_NAME_LEN: usize = 64;

/// `ioctl(NS_GET_NSTYPE)` = `_IO(0xb7, 0x3)`: the `CLONE_NEW*` type of an nsfs file.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Serialises the "make /run/netns a shared mount point" step between threads of this
/// process, so two concurrent `create_named` calls do not stack two bind mounts.
static RUN_DIR_LOCK: Mutex<()> = Mutex::new(());

/// An open handle (a file descriptor) on a network namespace.
///
/// Owns only the fd: while it is open the namespace stays alive even if its name is deleted,
/// and dropping it closes the fd (the namespace dies once nothing else references it).
/// It never switches the namespace of the thread that holds it; use [`Netns::run_in`] or
/// [`Netlink::open_in`] to act inside it.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
}

impl Netns {
    /// The calling thread's network namespace (`/proc/thread-self/ns/net`).
    pub fn current() -> io::Result<Netns> {
        Self::open_path(Path::new("/proc/thread-self/ns/net"))
    }

    /// The named namespace `/run/netns/NAME` (NotFound if absent, InvalidInput for a bad name).
    pub fn open_named(name: &str) -> io::Result<Netns> {
        validate_name(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Self::open_path(&named_path(name))
    }

    /// Opens a namespace file (an nsfs file such as `/proc/PID/ns/net` or a bind mount of
    /// one). A file that is not a network namespace is rejected with InvalidInput.
    pub fn open_path(path: &Path) -> io::Result<Netns> {
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| context(e, format!("open netns {}", path.display())))?;
        // SAFETY: plain ioctl on an fd we own; the result is an int.
        let ty = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if ty < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOTTY) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a namespace file", path.display()),
                ));
            }
            return Err(context(err, format!("NS_GET_NSTYPE {}", path.display())));
        }
        if ty != libc::CLONE_NEWNET {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not a network namespace (type {ty:#x})",
                    path.display()
                ),
            ));
        }
        Ok(Netns { fd: file.into() })
    }

    /// The raw fd (still owned by this handle).
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Another handle on the same namespace (dup of the fd).
    pub fn try_clone(&self) -> io::Result<Netns> {
        Ok(Netns {
            fd: self.fd.try_clone()?,
        })
    }

    /// Runs `f` on a new thread that has entered this namespace (`setns(fd, CLONE_NEWNET)`)
    /// and returns its result. The calling thread is never moved. A panic in `f` is
    /// propagated to the caller. Note that only the network namespace changes: the mount
    /// namespace (and so `/sys`) stays the caller's.
    pub fn run_in<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> io::Result<T> {
        let fd = self.fd.as_fd();
        std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name("netns-run".into())
                .spawn_scoped(s, move || -> io::Result<T> {
                    // SAFETY: setns on a valid fd; affects only this helper thread.
                    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(context(
                            io::Error::last_os_error(),
                            "setns(CLONE_NEWNET)".into(),
                        ));
                    }
                    Ok(f())
                })
                .map_err(|e| context(e, "spawn netns thread".into()))?;
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// True if both handles refer to the same namespace (same `st_dev`/`st_ino`).
    pub fn same_as(&self, other: &Netns) -> io::Result<bool> {
        Ok(self.identity()? == other.identity()?)
    }

    /// `(st_dev, st_ino)` of the namespace: equal for handles on the same namespace.
    pub fn identity(&self) -> io::Result<(u64, u64)> {
        // SAFETY: fstat fills a zeroed stat struct for an fd we own.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(self.fd.as_raw_fd(), &mut st) } != 0 {
            return Err(context(io::Error::last_os_error(), "fstat netns".into()));
        }
        Ok((st.st_dev, st.st_ino))
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Netns {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<OwnedFd> for Netns {
    /// Wraps an fd the caller knows to be a network-namespace fd (not checked).
    fn from(fd: OwnedFd) -> Netns {
        Netns { fd }
    }
}

/// Checks a namespace name: 1..=64 characters of `[A-Za-z0-9_.-]`, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("netns name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "netns name {name:?} is longer than {MAX_NAME_LEN} characters"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("netns name {name:?} is not allowed"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "netns name {name:?} contains {c:?} (allowed: A-Z a-z 0-9 _ . -)"
        ));
    }
    Ok(())
}

/// `/run/netns/NAME` (the name is not validated).
pub fn named_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// True if `/run/netns/NAME` exists (false for an invalid name).
pub fn exists(name: &str) -> bool {
    validate_name(name).is_ok() && named_path(name).symlink_metadata().is_ok()
}

/// The inode of the namespace mounted at `/run/netns/NAME` (it names the namespace
/// while it lives), if there is one.
pub fn inode(name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    validate_name(name).ok()?;
    fs::metadata(named_path(name)).ok().map(|m| m.ino())
}

/// Names under `/run/netns`, sorted (empty if the directory does not exist).
pub fn list_named() -> io::Result<Vec<String>> {
    let dir = match fs::read_dir(NETNS_RUN_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(context(e, format!("read {NETNS_RUN_DIR}"))),
    };
    let mut names = Vec::new();
    for entry in dir {
        let entry = entry.map_err(|e| context(e, format!("read {NETNS_RUN_DIR}")))?;
        if let Ok(name) = entry.file_name().into_string() {
            if validate_name(&name).is_ok() {
                names.push(name);
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Like `ip netns add NAME`, and returns a handle on the new namespace.
///
/// Makes `/run/netns` a shared mount point if it is not one yet (as iproute2 does:
/// `mount --make-rshared`, and on EINVAL bind-mount the directory onto itself first),
/// creates `/run/netns/NAME` with O_EXCL (AlreadyExists if present), unshares a new network
/// namespace on a helper thread and bind-mounts `/proc/self/task/TID/ns/net` onto the file,
/// then brings `lo` up inside. On failure everything it created is removed again.
pub fn create_named(name: &str) -> io::Result<Netns> {
    validate_name(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    prepare_run_dir()?;
    let path = named_path(name);
    let cpath = cstring(&path)?;

    // SAFETY: open(2) with a valid C string; the fd is closed right away.
    let fd = unsafe {
        libc::open(
            cpath.as_ptr(),
            libc::O_RDONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(context(
            io::Error::last_os_error(),
            format!("create netns file {}", path.display()),
        ));
    }
    // SAFETY: fd was just returned by open and is owned here.
    unsafe { libc::close(fd) };

    let mounted = std::cell::Cell::new(false);
    let result = (|| -> io::Result<Netns> {
        let thread_path = path.clone();
        let made = std::thread::Builder::new()
            .name("netns-create".into())
            .spawn(move || unshare_and_mount(&thread_path))
            .map_err(|e| context(e, "spawn netns thread".into()))?
            .join();
        match made {
            Ok(Ok(())) => mounted.set(true),
            Ok(Err((err, was_mounted))) => {
                mounted.set(was_mounted);
                return Err(err);
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
        Netns::open_path(&path)
    })();

    if result.is_err() {
        if mounted.get() {
            // SAFETY: umount2 on a valid C string.
            unsafe { libc::umount2(cpath.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = fs::remove_file(&path);
    }
    result
}

/// Runs on the helper thread: new netns, bind mount, `lo` up. The thread (and with it the
/// only reference besides the mount) ends right after. Returns whether the mount was made.
fn unshare_and_mount(path: &Path) -> Result<(), (io::Error, bool)> {
    // SAFETY: unshare(CLONE_NEWNET) only changes this thread's network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err((
            context(io::Error::last_os_error(), "unshare(CLONE_NEWNET)".into()),
            false,
        ));
    }
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    let src = format!("/proc/self/task/{tid}/ns/net");
    let csrc = CString::new(src.clone())
        .map_err(|e| (io::Error::new(io::ErrorKind::InvalidInput, e), false))?;
    let cdst = cstring(path).map_err(|e| (e, false))?;
    let none = c"none";
    // SAFETY: mount(2) with valid C strings and a null data pointer.
    let rc = unsafe {
        libc::mount(
            csrc.as_ptr(),
            cdst.as_ptr(),
            none.as_ptr(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err((
            context(
                io::Error::last_os_error(),
                format!("bind mount {src} on {}", path.display()),
            ),
            false,
        ));
    }
    let lo_up = (|| -> io::Result<()> {
        let mut nl = Netlink::open()?;
        let lo = nl
            .link_by_name("lo")?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no lo in new netns"))?;
        nl.set_up(lo.index, true)
    })();
    lo_up.map_err(|e| {
        (
            context(e, format!("bring lo up in {}", path.display())),
            true,
        )
    })
}

/// Makes `/run/netns` exist and be a shared mount point, exactly like iproute2's netns_add.
fn prepare_run_dir() -> io::Result<()> {
    let _guard = RUN_DIR_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = c"/run/netns";
    // SAFETY: mkdir with a valid C string.
    if unsafe { libc::mkdir(dir.as_ptr(), 0o755) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EEXIST) {
            return Err(context(err, format!("mkdir {NETNS_RUN_DIR}")));
        }
    }
    let none = c"none";
    let empty = c"";
    let mut made_mount = false;
    loop {
        // SAFETY: mount(2) with valid C strings and a null data pointer.
        let rc = unsafe {
            libc::mount(
                empty.as_ptr(),
                dir.as_ptr(),
                none.as_ptr(),
                libc::MS_SHARED | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) || made_mount {
            return Err(context(
                err,
                format!("mount --make-rshared {NETNS_RUN_DIR}"),
            ));
        }
        // Not a mount point yet: bind-mount the directory onto itself, then retry.
        // SAFETY: as above.
        let rc = unsafe {
            libc::mount(
                dir.as_ptr(),
                dir.as_ptr(),
                none.as_ptr(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(context(
                io::Error::last_os_error(),
                format!("mount --rbind {NETNS_RUN_DIR} {NETNS_RUN_DIR}"),
            ));
        }
        made_mount = true;
    }
}

/// Like `ip netns del NAME`: lazily unmounts `/run/netns/NAME` and removes the file.
/// NotFound if it does not exist. The namespace itself lives on while any process, fd
/// (e.g. a [`Netns`]) or socket still references it.
pub fn delete_named(name: &str) -> io::Result<()> {
    validate_name(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let path = named_path(name);
    if let Err(e) = path.symlink_metadata() {
        return Err(context(e, format!("netns {name}")));
    }
    let cpath = cstring(&path)?;
    // Errors are ignored as iproute2 does (EINVAL: not mounted, e.g. a stale file).
    // SAFETY: umount2 on a valid C string.
    unsafe { libc::umount2(cpath.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
    fs::remove_file(&path).map_err(|e| context(e, format!("remove {}", path.display())))
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Adds context to an error, keeping the errno reachable via [`crate::netlink::errno`].
fn context(err: io::Error, what: String) -> io::Error {
    match crate::netlink::errno(&err) {
        Some(code) => os_error(code, what),
        None => io::Error::new(err.kind(), format!("{what}: {err}")),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    static COUNTER: AtomicU32 = AtomicU32::new(0);

    /// True if the test may run (root); false (after printing why) if it should be skipped.
    /// Panics instead of skipping when VSWITCHD_E2E=1.
    pub(crate) fn privileged() -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        if std::env::var("VSWITCHD_E2E").as_deref() == Ok("1") {
            panic!("VSWITCHD_E2E=1 but not running as root: netns/netlink tests need root");
        }
        eprintln!("skipping: netns/netlink tests need root");
        false
    }

    /// A named namespace created for one test, deleted on drop (even on panic).
    pub(crate) struct TestNs {
        pub name: String,
        pub ns: Netns,
    }

    impl TestNs {
        pub(crate) fn new() -> TestNs {
            let n = COUNTER.fetch_add(1, Ordering::SeqCst);
            let name = format!("vsnl-{}-{n}", std::process::id());
            let ns = create_named(&name).unwrap_or_else(|e| panic!("create_named {name}: {e}"));
            TestNs { name, ns }
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            if let Err(e) = delete_named(&self.name) {
                eprintln!("cleanup: delete_named {}: {e}", self.name);
            }
        }
    }

    fn ip_netns_list() -> String {
        let out = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("run ip netns list");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn validate_names() {
        assert!(validate_name("a").is_ok());
        assert!(validate_name("sb-1_x.y").is_ok());
        assert!(validate_name(&"a".repeat(64)).is_ok());
        assert!(validate_name(&"a".repeat(65)).is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name(".").is_err());
        assert!(validate_name("..").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name("é").is_err());
        let msg = validate_name("x/y").unwrap_err();
        assert!(msg.contains("'/'"), "{msg}");
        assert!(!exists("../etc"));
        assert_eq!(
            Netns::open_named("a/b").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn create_list_delete() {
        if !privileged() {
            return;
        }
        let root = Netns::current().unwrap();
        let t = TestNs::new();
        assert!(exists(&t.name));
        assert!(list_named().unwrap().contains(&t.name));
        assert!(
            ip_netns_list()
                .lines()
                .any(|l| l.split_whitespace().next() == Some(t.name.as_str())),
            "ip netns list does not show {}: {}",
            t.name,
            ip_netns_list()
        );
        assert!(!t.ns.same_as(&root).unwrap());
        let again = Netns::open_named(&t.name).unwrap();
        assert!(again.same_as(&t.ns).unwrap());
        assert!(t.ns.try_clone().unwrap().same_as(&again).unwrap());

        // lo is up inside, visible to the ip oracle too.
        let out = Command::new("ip")
            .args(["netns", "exec", &t.name, "ip", "-o", "link", "show", "lo"])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(s.contains("UP"), "lo not up: {s}");

        let dup = create_named(&t.name).unwrap_err();
        assert_eq!(dup.kind(), io::ErrorKind::AlreadyExists, "{dup}");
        assert_eq!(crate::netlink::errno(&dup), Some(libc::EEXIST));
        // The failed create must not have removed the existing one.
        assert!(exists(&t.name));
        assert!(Netns::open_named(&t.name).unwrap().same_as(&t.ns).unwrap());

        let name = t.name.clone();
        drop(t);
        assert!(!exists(&name));
        assert!(!list_named().unwrap().contains(&name));
        assert!(!ip_netns_list().contains(&name));
        let e = delete_named(&name).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let e = Netns::open_named(&name).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert_eq!(crate::netlink::errno(&e), Some(libc::ENOENT));
        // The handle keeps the namespace alive after the name is gone.
        assert!(!again.same_as(&root).unwrap());
    }

    #[test]
    fn open_path_rejects_non_netns() {
        let e = Netns::open_path(Path::new("/proc/self/ns/uts")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let e = Netns::open_path(Path::new("/etc/hostname")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }

    #[test]
    fn run_in_enters_namespace() {
        if !privileged() {
            return;
        }
        let root = Netns::current().unwrap();
        let t = TestNs::new();
        let inside = t.ns.run_in(Netns::current).unwrap().unwrap();
        assert!(inside.same_as(&t.ns).unwrap());
        assert!(!inside.same_as(&root).unwrap());
        // The calling thread did not move.
        assert!(Netns::current().unwrap().same_as(&root).unwrap());
        // Borrowing works; the value comes back.
        let v = String::from("abc");
        assert_eq!(t.ns.run_in(|| v.len()).unwrap(), 3);
        // Panics propagate.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = t.ns.run_in(|| panic!("boom"));
        }));
        assert!(r.is_err());
    }

    #[test]
    fn concurrent_create_delete() {
        if !privileged() {
            return;
        }
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..3 {
                        let t = TestNs::new();
                        let mut nl = Netlink::open_in(&t.ns).unwrap();
                        let lo = nl.link_by_name("lo").unwrap().unwrap();
                        assert!(lo.up);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
