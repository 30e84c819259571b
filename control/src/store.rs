//! The embedded state store: one JSON file in the state directory, replaced
//! atomically (write to a temporary file, fsync, rename, fsync the directory) before a
//! change is acknowledged, and a lock file so two daemons never share a directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::model::{State, STATE_VERSION};

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";
/// One empty file per named namespace the daemon is creating or deleting.
const NETNS_PENDING_DIR: &str = "netns-pending";

/// Owns the state directory while the daemon runs.
pub struct FileStore {
    dir: PathBuf,
    _lock: File,
}

impl FileStore {
    /// This host's identity in a cluster: random, made on first use and kept in the
    /// directory (`host.id`), so it survives a change of underlay address.
    pub fn host_id(&self) -> io::Result<String> {
        let p = self.dir.join("host.id");
        match fs::read_to_string(&p) {
            Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            Ok(_) | Err(_) => {
                let id = crate::model::random_id()[..32].to_string();
                fs::write(&p, format!("{id}\n"))?;
                Ok(id)
            }
        }
    }

    /// Opens (creating) `dir` and takes its lock. Fails if another daemon holds it.
    pub fn open(dir: &Path) -> io::Result<FileStore> {
        fs::create_dir_all(dir)?;
        let mut lock = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(dir.join(LOCK_FILE))?;
        // SAFETY: flock on an open file.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            // The holder wrote its pid into the lock file when it took the lock.
            let mut holder = String::new();
            let _ = io::Read::read_to_string(&mut lock, &mut holder);
            let who = match holder.trim().parse::<u32>() {
                Ok(pid) => format!("pid {pid}"),
                Err(_) => "it holds the directory's lock".to_string(),
            };
            return Err(io::Error::new(io::ErrorKind::WouldBlock, format!("in use by another vswitchd ({who})")));
        }
        // Ours now: say who holds it, for the message above.
        lock.set_len(0)?;
        io::Write::write_all(&mut lock, format!("{}\n", std::process::id()).as_bytes())?;
        Ok(FileStore { dir: dir.to_path_buf(), _lock: lock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Notes that the daemon is about to create or delete the named namespace `name`
    /// (a validated sandbox name), before it records the outcome in the state: a daemon
    /// killed in between finds the note at its next start ([`pending_netns`]) and can
    /// tell its own orphan from someone else's namespace. `ino`, once the namespace
    /// exists, is its inode: a namespace of that name with another inode is not the
    /// one noted. Not synced: a crash of the machine empties /run/netns too.
    pub fn mark_netns(&self, name: &str, ino: Option<u64>) -> io::Result<()> {
        let d = self.dir.join(NETNS_PENDING_DIR);
        fs::create_dir_all(&d)?;
        fs::write(d.join(name), ino.map(|i| format!("{i}\n")).unwrap_or_default())
    }

    /// The outcome for `name` is in the state (or nothing was done): the note goes.
    pub fn unmark_netns(&self, name: &str) {
        let _ = fs::remove_file(self.dir.join(NETNS_PENDING_DIR).join(name));
    }

    /// Names noted by [`mark_netns`] and not taken back, with their inode when it was
    /// noted, sorted by name.
    pub fn pending_netns(&self) -> Vec<(String, Option<u64>)> {
        let d = self.dir.join(NETNS_PENDING_DIR);
        let mut v: Vec<(String, Option<u64>)> = fs::read_dir(&d)
            .map(|rd| {
                rd.filter_map(|e| {
                    let name = e.ok()?.file_name().into_string().ok()?;
                    let ino = fs::read_to_string(d.join(&name)).ok().and_then(|t| t.trim().parse().ok());
                    Some((name, ino))
                })
                .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The saved state, or an empty one if none was saved yet.
    pub fn load(&self) -> io::Result<State> {
        let p = self.dir.join(STATE_FILE);
        let data = match fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State { version: STATE_VERSION, ..Default::default() }),
            Err(e) => return Err(e),
        };
        let s: State = serde_json::from_slice(&data)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", p.display())))?;
        if s.version > STATE_VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: state version {} is newer than this vswitchd ({STATE_VERSION})", p.display(), s.version),
            ));
        }
        Ok(s)
    }

    /// Replaces the saved state with `s`, durably.
    pub fn save(&self, s: &State) -> io::Result<()> {
        let data = serde_json::to_vec_pretty(s).map_err(io::Error::other)?;
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&data)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join(STATE_FILE))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Sandbox;

    /// Namespace notes: made, listed sorted, taken back; taking back twice is fine.
    fn st_notes(d: &Path) {
        let st = FileStore::open(d).unwrap();
        assert!(st.pending_netns().is_empty());
        st.mark_netns("sb2", None).unwrap();
        st.mark_netns("sb1", None).unwrap();
        st.mark_netns("sb1", Some(4026532999)).unwrap();
        assert_eq!(st.pending_netns(), [("sb1".to_string(), Some(4026532999)), ("sb2".to_string(), None)]);
        st.unmark_netns("sb2");
        st.unmark_netns("sb2");
        assert_eq!(FileStore::open(d).err().map(|e| e.kind()), Some(io::ErrorKind::WouldBlock));
        drop(st);
        let st = FileStore::open(d).unwrap();
        assert_eq!(st.pending_netns(), [("sb1".to_string(), Some(4026532999))], "notes outlive the daemon");
        st.unmark_netns("sb1");
        assert!(st.pending_netns().is_empty());
    }

    #[test]
    fn save_load_and_lock() {
        let d = std::env::temp_dir().join(format!("vsw-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        let st = FileStore::open(&d).unwrap();
        assert_eq!(st.load().unwrap().version, STATE_VERSION);
        let mut s = st.load().unwrap();
        s.sandboxes.insert("c1".into(), Sandbox { name: "c1".into(), id: "x".into(), created: 3, hostname: None, dns: vec![], dns_search: vec![], dns_options: vec![] });
        st.save(&s).unwrap();
        assert_eq!(st.load().unwrap(), s);
        let e = FileStore::open(&d).err().expect("second opener refused");
        assert!(e.to_string().contains(&format!("pid {}", std::process::id())), "{e}");
        drop(st);
        assert_eq!(FileStore::open(&d).unwrap().load().unwrap(), s);
        st_notes(&d);
        fs::write(d.join(STATE_FILE), b"{ not json").unwrap();
        assert!(FileStore::open(&d).unwrap().load().is_err());
        fs::remove_dir_all(&d).unwrap();
    }
}
