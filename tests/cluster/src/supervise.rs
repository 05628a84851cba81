//! The replica processes the harness started, as the operating system sees
//! them: each in a process group of its own, and all of them killed when the
//! harness itself is interrupted.
//!
//! Why a group of its own: the kernel sends SIGHUP (then SIGCONT) to every
//! process of a process group that becomes orphaned while one of its members
//! is stopped. A replica in the harness's group and paused by a scenario
//! (SIGSTOP) was killed that way when the shell that started the harness in
//! the background exited mid-scenario; the scenario then failed with "exited
//! on its own with signal 1 (SIGHUP)". In a group of its own, whose parent
//! (the harness) sits in another group of the same session, a replica's
//! group is orphaned only once the harness is gone.
//!
//! The price: a Ctrl-C at the terminal no longer reaches the replicas, so
//! [`watch_interrupts`] kills them when the harness gets SIGINT, SIGTERM or
//! SIGHUP, and removes the containers of `--docker` runs.

use std::collections::BTreeSet;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command};
use std::sync::{Mutex, PoisonError};

/// Process groups (each a replica's pid) and containers started and not
/// yet reaped.
static STARTED: Mutex<Started> = Mutex::new(Started {
    groups: BTreeSet::new(),
    containers: BTreeSet::new(),
});

struct Started {
    groups: BTreeSet<i32>,
    containers: BTreeSet<String>,
}

fn started() -> std::sync::MutexGuard<'static, Started> {
    STARTED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A replica's process (or the attached `docker run` of its container),
/// known to [`stop_everything_started`] until it is dropped. Drop it right
/// after reaping it, so that a reused pid is never signalled.
#[derive(Debug)]
pub struct Supervised {
    child: Child,
    group: Option<i32>,
    container: Option<String>,
}

impl Supervised {
    /// Starts `command` as the leader of a new process group.
    ///
    /// # Errors
    /// When the process cannot start.
    pub fn spawn_in_own_group(command: &mut Command) -> io::Result<Self> {
        let child = command.process_group(0).spawn()?;
        let group = i32::try_from(child.id()).ok();
        if let Some(g) = group {
            started().groups.insert(g);
        }
        Ok(Self {
            child,
            group,
            container: None,
        })
    }

    /// The attached `docker run` of container `name` (it stays in the
    /// harness's group: a container is paused through the engine, never
    /// with SIGSTOP).
    #[must_use]
    pub fn container(child: Child, name: &str) -> Self {
        started().containers.insert(name.to_owned());
        Self {
            child,
            group: None,
            container: Some(name.to_owned()),
        }
    }
}

impl Deref for Supervised {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.child
    }
}

impl DerefMut for Supervised {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let mut s = started();
        if let Some(g) = self.group {
            s.groups.remove(&g);
        }
        if let Some(name) = &self.container {
            s.containers.remove(name);
        }
    }
}

/// SIGKILL to every replica process group not yet reaped, and a forced
/// removal of every container; returns how many of each there were.
pub fn stop_everything_started() -> (usize, usize) {
    use rustix::process::{kill_process_group, Pid, Signal};
    let (groups, containers) = {
        let s = started();
        (s.groups.clone(), s.containers.clone())
    };
    for g in &groups {
        if let Some(pid) = Pid::from_raw(*g) {
            let _ = kill_process_group(pid, Signal::KILL);
        }
    }
    for name in &containers {
        let _ = crate::cluster::docker(&["rm", "--force", name]);
    }
    (groups.len(), containers.len())
}

/// Installs handlers for SIGINT, SIGTERM and SIGHUP at once (so that no
/// interrupt between here and the first replica's start takes the default
/// action), and spawns on `rt` the task that waits for one, then kills what
/// the harness started ([`stop_everything_started`]) and exits with 128 +
/// the signal number. Logs and stores stay in the work directory.
pub fn watch_interrupts(rt: &tokio::runtime::Runtime) {
    use tokio::signal::unix::{signal, SignalKind};
    let _context = rt.enter();
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("pbft-cluster: cannot watch for SIGINT/SIGTERM/SIGHUP; an interrupt may leave replicas running");
        return;
    };
    rt.spawn(async move {
        let (name, code) = tokio::select! {
            _ = int.recv() => ("SIGINT", 130),
            _ = term.recv() => ("SIGTERM", 143),
            _ = hup.recv() => ("SIGHUP", 129),
        };
        let (processes, containers) = stop_everything_started();
        eprintln!(
            "pbft-cluster: {name}: killed {processes} replica process(es) and removed {containers} \
             container(s); logs and stores are kept in the work directory"
        );
        std::process::exit(code);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::{getpgid, getpgrp, Pid};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    fn sleeper() -> Supervised {
        let mut c = Command::new("sleep");
        c.arg("30").stdin(Stdio::null());
        Supervised::spawn_in_own_group(&mut c).expect("sleep starts")
    }

    fn pid(s: &Supervised) -> Pid {
        Pid::from_raw(i32::try_from(s.id()).expect("pid")).expect("nonzero pid")
    }

    #[test]
    fn a_replica_leads_its_own_process_group_and_is_known_until_dropped() {
        let mut s = sleeper();
        let p = pid(&s);
        assert_eq!(getpgid(Some(p)).expect("getpgid"), p);
        assert_ne!(getpgid(Some(p)).expect("getpgid"), getpgrp());
        assert!(started().groups.contains(&p.as_raw_nonzero().get()));
        s.kill().expect("kill");
        s.wait().expect("reap");
        drop(s);
        assert!(!started().groups.contains(&p.as_raw_nonzero().get()));
    }

    #[test]
    fn an_interrupt_kills_every_started_replica_even_a_paused_one() {
        let mut a = sleeper();
        let mut b = sleeper();
        rustix::process::kill_process(pid(&b), rustix::process::Signal::STOP).expect("SIGSTOP");
        let (processes, _) = stop_everything_started();
        assert!(processes >= 2, "{processes} groups killed");
        let deadline = Instant::now() + Duration::from_secs(10);
        for s in [&mut a, &mut b] {
            loop {
                if let Some(status) = s.try_wait().expect("try_wait") {
                    assert!(!status.success(), "killed, not exited: {status}");
                    break;
                }
                assert!(Instant::now() < deadline, "still running after SIGKILL");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
