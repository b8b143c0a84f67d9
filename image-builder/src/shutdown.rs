//! Nothing outlives image-builder: every emulator and build it starts, and every temporary
//! folder it makes, is ended or removed however image-builder ends.
//!
//! Destructors cover a normal return and a panic ([`OwnedChild`] kills, [`OwnedDir`]
//! removes). Signals do not run destructors, so the CLI calls [`handle_signals`] first: a
//! handler for SIGINT, SIGTERM and SIGHUP writes the signal's number into a pipe, and a
//! thread of its own reads it, stops every live child (SIGTERM, so QEMU restores the
//! terminal, then SIGKILL after [`GRACE`]), removes every live folder and exits with
//! 128 + the signal, as a shell reports it. No signal mask changes, so children start with
//! the default dispositions, and QEMU still ends on the Ctrl-C a terminal sends to the
//! whole process group. A signal the parent ignores (`nohup`, a background job of a
//! script) stays ignored.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

/// How long a child has to end after SIGTERM before it gets SIGKILL.
pub const GRACE: Duration = Duration::from_secs(3);

/// What is alive now, for the signal thread to end.
struct Live {
    children: Vec<(u64, Weak<Mutex<Child>>)>,
    dirs: Vec<(u64, PathBuf)>,
    files: Vec<(u64, PathBuf)>,
    next: u64,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    children: Vec::new(),
    dirs: Vec::new(),
    files: Vec::new(),
    next: 0,
});

fn live() -> MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lock(child: &Mutex<Child>) -> MutexGuard<'_, Child> {
    child.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A started process that is killed and reaped when dropped, and on a signal.
pub struct OwnedChild {
    id: u64,
    child: Arc<Mutex<Child>>,
}

impl OwnedChild {
    /// Starts `command`. The registry stays locked from before the start until the child
    /// is in it, so a signal in between still finds it; once a signal is being handled,
    /// nothing new starts.
    pub fn spawn(command: &mut Command) -> io::Result<Self> {
        let mut live = live();
        if STOPPING.load(Ordering::SeqCst) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "image-builder is stopping",
            ));
        }
        let child = Arc::new(Mutex::new(command.spawn()?));
        let id = live.next;
        live.next += 1;
        live.children.push((id, Arc::downgrade(&child)));
        Ok(Self { id, child })
    }

    /// The child's stdout, if it was piped (once).
    pub fn take_stdout(&self) -> Option<ChildStdout> {
        lock(&self.child).stdout.take()
    }

    /// The child's stderr, if it was piped (once).
    pub fn take_stderr(&self) -> Option<ChildStderr> {
        lock(&self.child).stderr.take()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        lock(&self.child).id()
    }

    /// Its status if it has ended (never blocks).
    pub fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        lock(&self.child).try_wait()
    }

    /// Waits for it to end, without holding the lock the signal thread needs.
    pub fn wait(&self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills and reaps it (already ended is fine).
    pub fn kill(&self) {
        let mut child = lock(&self.child);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        if let Ok(None) = self.try_wait() {
            self.kill();
        }
        live().children.retain(|(id, _)| *id != self.id);
    }
}

/// A temporary folder that is removed when dropped, and on a signal.
#[derive(Debug)]
pub struct OwnedDir {
    id: u64,
    dir: tempfile::TempDir,
}

impl OwnedDir {
    /// A new folder `<prefix>XXXXXX` in the temporary directory.
    pub fn new(prefix: &str) -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let mut live = live();
        let id = live.next;
        live.next += 1;
        live.dirs.push((id, dir.path().to_path_buf()));
        Ok(Self { id, dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for OwnedDir {
    fn drop(&mut self) {
        live().dirs.retain(|(id, _)| *id != self.id);
        // The TempDir field removes the folder after this.
    }
}

/// A file that is removed when dropped and on a signal, unless it was renamed into place
/// (a partial output).
#[derive(Debug)]
pub struct OwnedFile {
    id: u64,
    path: PathBuf,
}

impl OwnedFile {
    pub fn new(path: PathBuf) -> Self {
        let mut live = live();
        let id = live.next;
        live.next += 1;
        live.files.push((id, path.clone()));
        Self { id, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the file to `to`; from then on it is not removed.
    pub fn rename(self, to: &Path) -> anyhow::Result<()> {
        use anyhow::Context as _;
        fs::rename(&self.path, to)
            .with_context(|| format!("cannot move {} to {}", self.path.display(), to.display()))
    }
}

impl Drop for OwnedFile {
    fn drop(&mut self) {
        live().files.retain(|(id, _)| *id != self.id);
        let _ = fs::remove_file(&self.path);
    }
}

/// Ends every live child and removes every live folder (the signal thread's work).
pub fn end_everything() {
    let (children, dirs, files) = {
        let live = live();
        let children: Vec<Arc<Mutex<Child>>> = live
            .children
            .iter()
            .filter_map(|(_, c)| c.upgrade())
            .collect();
        let dirs: Vec<PathBuf> = live.dirs.iter().map(|(_, d)| d.clone()).collect();
        let files: Vec<PathBuf> = live.files.iter().map(|(_, f)| f.clone()).collect();
        (children, dirs, files)
    };
    for child in &children {
        let mut child = lock(child);
        if let Ok(None) = child.try_wait() {
            // Not reaped, so the pid is still this child's.
            sys::terminate(child.id());
        }
    }
    let deadline = Instant::now() + GRACE;
    for child in &children {
        let mut child = lock(child);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    for dir in dirs {
        let _ = fs::remove_dir_all(dir);
    }
    for file in files {
        let _ = fs::remove_file(file);
    }
}

/// The signal being handled (0: none): once set, image-builder ends only through the
/// signal thread, with 128 + this.
static STOPPING: AtomicI32 = AtomicI32::new(0);

/// Handles SIGINT, SIGTERM and SIGHUP as the module docs say. Call it first in `main`.
pub fn handle_signals() -> io::Result<()> {
    let (mut reader, writer) = io::pipe()?;
    sys::install_handlers(writer)?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut byte = [0u8; 1];
            // Only the handler writes here; should the read fail, signals just go unhandled.
            if io::Read::read_exact(&mut reader, &mut byte).is_ok() {
                let signal = i32::from(byte[0]);
                STOPPING.store(signal, Ordering::SeqCst);
                end_everything();
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
}

/// `code`, unless a signal is being handled: then the signal thread ends the process (the
/// main thread must not exit first with the status of a QEMU the handler stopped).
pub fn exit_code(code: u8) -> u8 {
    while STOPPING.load(Ordering::SeqCst) != 0 {
        thread::park();
    }
    code
}

/// The calls into libc: the handler and its installation.
#[allow(unsafe_code)]
mod sys {
    use std::io;
    use std::os::fd::IntoRawFd as _;
    use std::sync::atomic::{AtomicI32, Ordering};

    /// Write end of the signal pipe, for the handler (-1 before installation).
    static PIPE: AtomicI32 = AtomicI32::new(-1);

    /// Writes the signal number into the pipe; nothing else is async-signal-safe enough.
    extern "C" fn on_signal(signal: libc::c_int) {
        let byte = signal as u8;
        // SAFETY: errno is this thread's; it is saved and restored around write(2), which is
        // async-signal-safe and reads one byte from a valid local.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(PIPE.load(Ordering::Relaxed), (&raw const byte).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }

    pub(super) fn install_handlers(writer: io::PipeWriter) -> io::Result<()> {
        // The write end lives as long as the process (the handler may run any time).
        PIPE.store(writer.into_raw_fd(), Ordering::Relaxed);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: sigaction is plain data, zeroed then filled; the handler is an
            // `extern "C" fn(c_int)` as sa_sigaction expects without SA_SIGINFO.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if old.sa_sigaction == libc::SIG_IGN {
                    continue;
                }
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }

    /// Sends SIGTERM to `pid`.
    pub(super) fn terminate(pid: u32) {
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: kill(2) takes any numbers and touches no memory of ours; the caller
            // holds the unreaped child, so `pid` is that child's.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn everything_live_is_ended_and_removed() {
        let child = OwnedChild::spawn(Command::new("sleep").arg("60")).unwrap();
        let dir = OwnedDir::new("fredvisor-test-").unwrap();
        let path = dir.path().to_path_buf();
        std::fs::write(path.join("f"), "x").unwrap();
        end_everything();
        assert!(child.try_wait().unwrap().is_some(), "the child ended");
        assert!(!path.exists(), "{} is gone", path.display());
    }

    #[test]
    fn drop_kills_and_removes() {
        let child = OwnedChild::spawn(Command::new("sleep").arg("60")).unwrap();
        let pid = child.pid();
        let dir = OwnedDir::new("fredvisor-test-").unwrap();
        let path = dir.path().to_path_buf();
        drop((child, dir));
        assert!(!path.exists());
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty(), "sleep {pid} was reaped: {stat}");
    }
}
