//! The fault scenarios, as data: each is a list of [`Step`]s written in a
//! small text language (parsed by [`parse_steps`]) so that the catalog
//! reads like FAULTS.md and a failing run can be replayed with
//! `--steps "..."`.
//!
//! ```text
//! steps   := step (';' step)*
//! step    := 'wait' DURATION | 'hold'
//!          | ('kill' | 'start' | 'term' | 'pause' | 'resume' | 'wipe') TARGET
//!          | 'restart-all' | 'rolling' | 'reverse'
//!          | 'isolate' TARGET | 'isolate-replicas' TARGET | 'split' K
//!          | 'cut' TARGET TARGET | 'cut-clients' TARGET | 'expect-relayed'
//!          | 'link' ('all' | 'clients' | TARGET TARGET) RULE*
//!          | 'heal' | 'garbage' N | 'slow-client' ('start' | 'stop')
//!          | 'dup-put' | 'dup-replay' | 'equivocating-client' N | 'twins-split'
//!          | 'twins-primary' | 'impostors' | 'tear' TARGET | 'clock' TARGET SECONDS | 'disk-full' TARGET | 'disk-heal' TARGET
//!          | 'byzantine' BEHAVIOUR TARGET
//! TARGET  := 'primary' | 'backup'K | 'r'K | 'random' | 'same'
//! RULE    := 'loss='P | 'dup='P | 'delay='MS | 'jitter='MS
//! ```
//!
//! `backupK` is the K-th replica after the current primary; `same` is the
//! replica the previous step with a target chose (so `kill primary; hold;
//! start same` restarts the replica that was killed, even though the
//! primary has changed since). `hold` waits for `--duration`.

use std::fmt;
use std::time::Duration;

use crate::proxy::LinkRule;

/// A replica, chosen when the step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The current primary (as most live replicas report it).
    Primary,
    /// The k-th replica after the primary (`backup0` follows it).
    Backup(usize),
    /// A replica by id.
    Replica(usize),
    /// A replica chosen by the seed.
    Random,
    /// The replica the previous targeted step chose.
    Same,
}

/// Which links a `link` step changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Links {
    /// Every replica-to-replica link, both ways.
    All,
    /// Every client-replica link, both ways.
    Clients,
    /// One directed link.
    Between(Target, Target),
}

/// One step of a scenario.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Let the workload run.
    Wait(Duration),
    /// Wait for the run's `--duration`.
    Hold,
    /// kill -9.
    Kill(Target),
    /// Start (after a kill or term).
    Start(Target),
    /// SIGTERM and wait.
    Term(Target),
    /// SIGSTOP.
    Pause(Target),
    /// SIGCONT.
    Resume(Target),
    /// Delete the store of a stopped replica.
    Wipe(Target),
    /// Step a replica's wall clock (CLOCK_REALTIME, as an NTP step does)
    /// by a signed number of seconds, through libfaketime (FAULTS.md 22).
    Clock(Target, i64),
    /// Cut the tail of the newest write-ahead log file of a stopped
    /// replica in the middle of a record (a torn write; FAULTS.md 20).
    Tear(Target),
    /// Put a stopped replica's store on a tmpfs with 2 MiB of room left,
    /// so that a write fails once it fills (FAULTS.md 20); the replica
    /// must stop rather than go on. Needs root.
    DiskFull(Target),
    /// Wait (up to 60 s) for the replica on a full disk to stop, then move
    /// its store back to the real disk.
    DiskHeal(Target),
    /// kill -9 every replica, then start them all.
    RestartAll,
    /// kill -9 and restart each replica in turn, in id order.
    Rolling,
    /// SIGTERM every replica in id order, start them in reverse order.
    Reverse,
    /// Cut a replica from everyone, clients included.
    Isolate(Target),
    /// Cut a replica from the other replicas (clients still reach it).
    IsolateReplicas(Target),
    /// Split the replicas in two: the primary and the k - 1 after it, and
    /// the rest (clients reach both sides).
    Split(usize),
    /// Drop everything from the first replica to the second (one way).
    Cut(Target, Target),
    /// Drop everything the clients send to a replica (one way: its replies
    /// still reach them).
    CutClients(Target),
    /// Check that backups relayed requests to the primary
    /// (`pbft_requests_relayed_total`) and that no replica started a view
    /// change (`pbft_view_changes_started_total`): PBFT 4.1.
    ExpectRelayed,
    /// Loss, duplication, delay on links.
    Link(Links, LinkRule),
    /// Remove every link rule.
    Heal,
    /// Send garbage datagrams to every replica (private and public ports).
    Garbage(usize),
    /// Start or stop a client that never reads its replies.
    SlowClient(bool),
    /// A raw client puts `dup/k`, then a workload client overwrites it.
    DupPut,
    /// The raw client sends its put again: it must get the cached reply and
    /// must not execute again (the overwrite stays).
    DupReplay,
    /// A client sends two different requests under one request number,
    /// one to each half of the replicas, `rounds` times.
    EquivocatingClient(usize),
    /// Twins of replicas 0 and 1, each copy with one half of the cluster
    /// and of the clients: f + 1 Byzantine replicas. Runs before the
    /// workload starts.
    TwinsSplit,
    /// A replica built with scripted misbehaviour.
    Byzantine(String, Target),
    /// A twin of replica 0 (the primary of view 0): f = 1 Byzantine
    /// identity equivocating through two honest copies. Copy 0 sits with
    /// replica 1, copy 1 with the others; each client reaches one copy and
    /// every other replica. Runs before the workload starts.
    TwinsPrimary,
    /// Identities that must be refused (FAULTS.md 15): a client with an
    /// unknown key, a configured client's key claiming a replica id on the
    /// mesh, an unknown key claiming a replica id.
    Impostors,
}

fn fmt_dur(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Primary => f.write_str("primary"),
            Self::Backup(k) => write!(f, "backup{k}"),
            Self::Replica(i) => write!(f, "r{i}"),
            Self::Random => f.write_str("random"),
            Self::Same => f.write_str("same"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wait(d) => write!(f, "wait {}", fmt_dur(*d)),
            Self::Hold => f.write_str("hold"),
            Self::Kill(t) => write!(f, "kill {t}"),
            Self::Start(t) => write!(f, "start {t}"),
            Self::Term(t) => write!(f, "term {t}"),
            Self::Pause(t) => write!(f, "pause {t}"),
            Self::Resume(t) => write!(f, "resume {t}"),
            Self::Wipe(t) => write!(f, "wipe {t}"),
            Self::Tear(t) => write!(f, "tear {t}"),
            Self::Clock(t, s) => write!(f, "clock {t} {s:+}"),
            Self::DiskFull(t) => write!(f, "disk-full {t}"),
            Self::DiskHeal(t) => write!(f, "disk-heal {t}"),
            Self::RestartAll => f.write_str("restart-all"),
            Self::Rolling => f.write_str("rolling"),
            Self::Reverse => f.write_str("reverse"),
            Self::Isolate(t) => write!(f, "isolate {t}"),
            Self::IsolateReplicas(t) => write!(f, "isolate-replicas {t}"),
            Self::Split(k) => write!(f, "split {k}"),
            Self::Cut(a, b) => write!(f, "cut {a} {b}"),
            Self::CutClients(t) => write!(f, "cut-clients {t}"),
            Self::ExpectRelayed => f.write_str("expect-relayed"),
            Self::Link(links, rule) => {
                match links {
                    Links::All => f.write_str("link all")?,
                    Links::Clients => f.write_str("link clients")?,
                    Links::Between(a, b) => write!(f, "link {a} {b}")?,
                }
                if rule.loss > 0.0 {
                    write!(f, " loss={}", rule.loss)?;
                }
                if rule.duplicate > 0.0 {
                    write!(f, " dup={}", rule.duplicate)?;
                }
                if rule.delay_ms > 0 {
                    write!(f, " delay={}", rule.delay_ms)?;
                }
                if rule.jitter_ms > 0 {
                    write!(f, " jitter={}", rule.jitter_ms)?;
                }
                Ok(())
            }
            Self::Heal => f.write_str("heal"),
            Self::Garbage(n) => write!(f, "garbage {n}"),
            Self::SlowClient(true) => f.write_str("slow-client start"),
            Self::SlowClient(false) => f.write_str("slow-client stop"),
            Self::DupPut => f.write_str("dup-put"),
            Self::DupReplay => f.write_str("dup-replay"),
            Self::EquivocatingClient(n) => write!(f, "equivocating-client {n}"),
            Self::TwinsSplit => f.write_str("twins-split"),
            Self::TwinsPrimary => f.write_str("twins-primary"),
            Self::Byzantine(b, t) => write!(f, "byzantine {b} {t}"),
            Self::Impostors => f.write_str("impostors"),
        }
    }
}

/// Formats steps back into the scenario language.
#[must_use]
pub fn format_steps(steps: &[Step]) -> String {
    steps
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn parse_target(token: Option<&str>) -> Result<Target, String> {
    let t = token.ok_or("missing target")?;
    let number = |s: &str| {
        s.parse::<usize>()
            .map_err(|_| format!("bad target {t:?}: expected primary, backupK, rK, random or same"))
    };
    match t {
        "primary" => Ok(Target::Primary),
        "random" => Ok(Target::Random),
        "same" => Ok(Target::Same),
        _ if t.starts_with("backup") => Ok(Target::Backup(number(&t[6..])?)),
        _ if t.starts_with('r') => Ok(Target::Replica(number(&t[1..])?)),
        _ => Err(format!(
            "bad target {t:?}: expected primary, backupK, rK, random or same"
        )),
    }
}

fn parse_duration(token: Option<&str>) -> Result<Duration, String> {
    let t = token.ok_or("missing duration")?;
    let (number, scale) = if let Some(ms) = t.strip_suffix("ms") {
        (ms, 1)
    } else if let Some(s) = t.strip_suffix('s') {
        (s, 1000)
    } else {
        return Err(format!("bad duration {t:?}: expected e.g. 2s or 500ms"));
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("bad duration {t:?}: expected e.g. 2s or 500ms"))?;
    Ok(Duration::from_millis(n * scale))
}

fn parse_rule<'a>(tokens: impl Iterator<Item = &'a str>) -> Result<LinkRule, String> {
    let mut rule = LinkRule::default();
    for t in tokens {
        let (k, v) = t
            .split_once('=')
            .ok_or_else(|| format!("bad link rule {t:?}: expected key=value"))?;
        let p = || {
            v.parse::<f64>()
                .ok()
                .filter(|p| (0.0..=1.0).contains(p))
                .ok_or_else(|| format!("{k}={v}: expected a probability in [0, 1]"))
        };
        let ms = || {
            v.parse::<u64>()
                .map_err(|_| format!("{k}={v}: expected milliseconds"))
        };
        match k {
            "loss" => rule.loss = p()?,
            "dup" => rule.duplicate = p()?,
            "delay" => rule.delay_ms = ms()?,
            "jitter" => rule.jitter_ms = ms()?,
            _ => {
                return Err(format!(
                    "unknown link rule {k:?} (loss, dup, delay, jitter)"
                ))
            }
        }
    }
    Ok(rule)
}

/// Parses one step.
///
/// # Errors
/// A message naming what is wrong.
pub fn parse_step(text: &str) -> Result<Step, String> {
    let mut tokens = text.split_whitespace();
    let word = tokens.next().ok_or("empty step")?;
    let step = match word {
        "wait" => Step::Wait(parse_duration(tokens.next())?),
        "hold" => Step::Hold,
        "kill" => Step::Kill(parse_target(tokens.next())?),
        "start" => Step::Start(parse_target(tokens.next())?),
        "term" => Step::Term(parse_target(tokens.next())?),
        "pause" => Step::Pause(parse_target(tokens.next())?),
        "resume" => Step::Resume(parse_target(tokens.next())?),
        "wipe" => Step::Wipe(parse_target(tokens.next())?),
        "tear" => Step::Tear(parse_target(tokens.next())?),
        "clock" => {
            let t = parse_target(tokens.next())?;
            let s = tokens
                .next()
                .and_then(|s| s.trim_start_matches('+').parse::<i64>().ok())
                .ok_or("clock needs a signed number of seconds (+3600, -60)")?;
            Step::Clock(t, s)
        }
        "disk-full" => Step::DiskFull(parse_target(tokens.next())?),
        "disk-heal" => Step::DiskHeal(parse_target(tokens.next())?),
        "restart-all" => Step::RestartAll,
        "rolling" => Step::Rolling,
        "reverse" => Step::Reverse,
        "isolate" => Step::Isolate(parse_target(tokens.next())?),
        "isolate-replicas" => Step::IsolateReplicas(parse_target(tokens.next())?),
        "split" => Step::Split(
            tokens
                .next()
                .and_then(|k| k.parse().ok())
                .ok_or("split needs a group size")?,
        ),
        "cut" => Step::Cut(parse_target(tokens.next())?, parse_target(tokens.next())?),
        "cut-clients" => Step::CutClients(parse_target(tokens.next())?),
        "expect-relayed" => Step::ExpectRelayed,
        "link" => {
            let mut rest: Vec<&str> = tokens.collect();
            let links = match rest.first().copied() {
                Some("all") => {
                    rest.remove(0);
                    Links::All
                }
                Some("clients") => {
                    rest.remove(0);
                    Links::Clients
                }
                _ => {
                    if rest.len() < 2 {
                        return Err("link needs all, clients, or two targets".into());
                    }
                    let a = parse_target(Some(rest.remove(0)))?;
                    let b = parse_target(Some(rest.remove(0)))?;
                    Links::Between(a, b)
                }
            };
            let rule = parse_rule(rest.into_iter())?;
            if rule.is_clear() {
                return Err("link needs at least one of loss=, dup=, delay=, jitter=".into());
            }
            return Ok(Step::Link(links, rule));
        }
        "heal" => Step::Heal,
        "garbage" => Step::Garbage(
            tokens
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or("garbage needs a count")?,
        ),
        "slow-client" => match tokens.next() {
            Some("start") => Step::SlowClient(true),
            Some("stop") => Step::SlowClient(false),
            _ => return Err("slow-client start|stop".into()),
        },
        "dup-put" => Step::DupPut,
        "dup-replay" => Step::DupReplay,
        "equivocating-client" => Step::EquivocatingClient(
            tokens
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or("equivocating-client needs a number of rounds")?,
        ),
        "twins-split" => Step::TwinsSplit,
        "twins-primary" => Step::TwinsPrimary,
        "impostors" => Step::Impostors,
        "byzantine" => {
            let b = tokens.next().ok_or("byzantine needs a behaviour")?;
            Step::Byzantine(b.to_owned(), parse_target(tokens.next())?)
        }
        other => return Err(format!("unknown step {other:?}")),
    };
    if let Some(extra) = tokens.next() {
        return Err(format!("unexpected {extra:?} after {word:?}"));
    }
    Ok(step)
}

/// Parses `step; step; ...`.
///
/// # Errors
/// The first bad step, with its position.
pub fn parse_steps(text: &str) -> Result<Vec<Step>, String> {
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, s)| parse_step(s).map_err(|e| format!("step {} ({s:?}): {e}", i + 1)))
        .collect()
}

/// What a scenario needs beyond a default node build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Nothing.
    Nothing,
    /// The view change (the primary is lost, paused or cut off).
    ViewChange,
    /// Root (it mounts a tmpfs): without it the scenario is reported as
    /// unavailable.
    Root,
    /// libfaketime (Debian's `faketime`) and local processes: replicas run
    /// with it preloaded; without it the scenario is unavailable.
    Faketime,
    /// A node built with the `byzantine` feature (`cargo xtask cluster-test
    /// --byzantine`): without one the scenario is reported as unavailable,
    /// never as passed.
    ByzantineBuild,
}

/// What the checks must say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Every check passes.
    Pass,
    /// A negative control: some check must report a violation.
    Violation,
}

/// A named scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// The FAULTS.md entries it covers.
    pub faults: Vec<u32>,
    /// One line on what it does.
    pub about: String,
    /// What it needs.
    pub needs: Needs,
    /// What the checks must say.
    pub expect: Expect,
    /// The steps.
    pub steps: Vec<Step>,
    /// Replicas accept MAC authenticators and the workload's clients use
    /// them (TOCS 3.2; `request_auth = "macs"`).
    pub macs: bool,
}

/// The catalog in text form: name, FAULTS.md entries, needs, expect,
/// steps, description.
/// A catalog entry: name, FAULTS.md entries, needs, expect, steps, description.
type Entry = (
    &'static str,
    &'static [u32],
    Needs,
    Expect,
    &'static str,
    &'static str,
);

#[rustfmt::skip]
const CATALOG: &[Entry] = &[
    ("baseline", &[], Needs::Nothing, Expect::Pass, "hold",
     "no fault: the workload and every check"),
    ("kill-backup", &[16], Needs::Nothing, Expect::Pass, "kill backup0; hold; start same",
     "kill -9 a backup, restart it from its store"),
    ("kill-primary", &[16], Needs::ViewChange, Expect::Pass, "kill primary; hold; start same",
     "kill -9 the primary, restart it from its store"),
    ("kill-random", &[16], Needs::ViewChange, Expect::Pass, "kill random; hold; start same; wait 2s; kill random; hold; start same",
     "kill -9 two replicas chosen by the seed, one after the other"),
    ("pause-primary", &[17], Needs::ViewChange, Expect::Pass, "pause primary; hold; wait 2s; resume same",
     "SIGSTOP the primary past the view-change timeout, then SIGCONT"),
    ("restart-all", &[18], Needs::Nothing, Expect::Pass, "wait 2s; restart-all; hold",
     "kill -9 every replica at once, restart all"),
    ("rolling-restart", &[18], Needs::ViewChange, Expect::Pass, "rolling",
     "kill -9 and restart each replica in turn"),
    ("reverse-restart", &[18], Needs::Nothing, Expect::Pass, "wait 2s; reverse; hold",
     "SIGTERM all in id order, start them in reverse order"),
    ("isolate-primary", &[12], Needs::ViewChange, Expect::Pass, "isolate primary; hold; heal",
     "partition the primary from replicas and clients, heal"),
    ("partition-backup", &[12], Needs::Nothing, Expect::Pass, "isolate backup1; hold; heal",
     "partition one backup (a minority), heal"),
    ("split-half", &[12], Needs::ViewChange, Expect::Pass, "split 2; hold; heal",
     "split the replicas in two halves (no quorum on either side), heal"),
    ("one-way", &[12], Needs::Nothing, Expect::Pass, "cut primary backup0; hold; heal",
     "the primary cannot send to one backup (the backup can send to it)"),
    ("clients-cut-primary", &[12], Needs::Nothing, Expect::Pass,
     "cut-clients primary; hold; expect-relayed; heal; hold",
     "the clients cannot reach the primary (one way; it reaches them and the replicas): backups relay their retransmitted requests (PBFT 4.1), no view change"),
    ("primary-mute", &[12], Needs::ViewChange, Expect::Pass,
     "cut primary backup0; cut same backup1; cut same backup2; hold; heal",
     "the primary receives everything and reaches no replica (one-way)"),
    ("lossy-links", &[13], Needs::Nothing, Expect::Pass,
     "link all loss=0.05 dup=0.05 delay=2 jitter=8; link clients loss=0.05 delay=1 jitter=4; hold; heal",
     "loss, duplication, delay and reordering on every link"),
    ("clogged-link", &[13], Needs::Nothing, Expect::Pass,
     "link primary backup0 loss=0.3 delay=300 jitter=300; link backup0 primary loss=0.3 delay=300 jitter=300; hold; heal",
     "one clogged link: heavy delay and loss between the primary and a backup"),
    ("garbage", &[14], Needs::Nothing, Expect::Pass, "garbage 3000; hold; garbage 3000",
     "garbage datagrams (random, QUIC-shaped) at every replica's ports"),
    ("impostors", &[15], Needs::Nothing, Expect::Pass, "impostors; hold; impostors",
     "an unknown client certificate, a client's certificate claiming a replica id, an unknown key claiming one: all refused while the cluster serves"),
    ("wipe-backup", &[19], Needs::Nothing, Expect::Pass, "kill backup0; wipe same; start same; hold",
     "a backup loses its whole store (f replicas) and catches up"),
    ("torn-tail", &[19, 20], Needs::Nothing, Expect::Pass,
     "kill backup0; tear same; start same; hold; kill primary; tear same; start same; hold",
     "a backup, then the primary, lose the tail of their write-ahead log mid-record (one at a time: f replicas); each drops the torn record and catches up"),
    ("clock-jumps", &[22], Needs::Faketime, Expect::Pass,
     "clock backup0 +34560000; hold; kill same; start same; hold; clock same -69120000; kill same; start same; hold; clock primary +34560000; hold",
     "a backup's wall clock steps 400 days ahead, then 400 days behind real time, restarting each time (new TLS certificates dated by the skewed clock); then the primary's steps ahead"),
    ("disk-full", &[20], Needs::Root, Expect::Pass,
     "kill backup0; disk-full same; start same; disk-heal same; start same; hold",
     "a backup's disk fills up: its store's write fails and it must stop, not go on; with room again it restarts and catches up"),
    ("lagging-replica", &[21], Needs::Nothing, Expect::Pass,
     "isolate-replicas backup1; hold; wait 3s; heal; hold",
     "a backup misses several checkpoints, then catches up by state transfer"),
    ("lagging-replica-vc", &[21], Needs::ViewChange, Expect::Pass,
     "isolate-replicas backup1; hold; kill primary; heal; hold; start same",
     "a lagging backup catches up while a view change runs"),
    ("client-retries", &[23], Needs::Nothing, Expect::Pass,
     "dup-put; link clients loss=0.3; hold; heal; dup-replay; restart-all; wait 2s; dup-replay",
     "lossy client links force retries; a replayed request gets its cached reply and runs once, also after a restart"),
    ("equivocating-client", &[24], Needs::Nothing, Expect::Pass, "equivocating-client 20; hold; equivocating-client 20",
     "a client sends different requests under one request number to the two halves of the replicas"),
    ("slow-client", &[25], Needs::Nothing, Expect::Pass, "slow-client start; hold; slow-client stop",
     "a client floods requests and never reads a reply"),
    ("byz-twins", &[1], Needs::Nothing, Expect::Pass, "twins-primary; hold",
     "twins of the primary (one Byzantine identity, two honest copies in two partitions) equivocate; the checks must pass"),
    ("negative-twins", &[26], Needs::Nothing, Expect::Violation, "twins-split; hold",
     "negative control: twins of replicas 0 and 1 (f + 1 Byzantine) split the cluster; the checks must fail"),
    ("byz-equivocating-primary", &[1], Needs::ByzantineBuild, Expect::Pass, "byzantine equivocating-primary primary; hold",
     "the primary sends different PRE-PREPAREs to two halves"),
    ("byz-double-vote", &[2], Needs::ByzantineBuild, Expect::Pass, "byzantine double-voting-backup backup0; hold",
     "a backup votes for two digests"),
    ("byz-silent-primary", &[3], Needs::ByzantineBuild, Expect::Pass, "byzantine silent-primary primary; hold",
     "the primary answers the transport but never proposes"),
    ("byz-selective-primary", &[4], Needs::ByzantineBuild, Expect::Pass, "byzantine selective-primary primary; hold",
     "the primary sends PRE-PREPAREs to only f backups"),
    ("byz-censoring-primary", &[5], Needs::ByzantineBuild, Expect::Pass, "byzantine censoring-primary primary; hold",
     "the primary drops one client's requests"),
    ("byz-forged-view-change", &[6], Needs::ByzantineBuild, Expect::Pass,
     "byzantine forged-view-change backup0; hold; isolate-replicas primary; hold; heal",
     "a backup sends VIEW-CHANGEs with forged certificates while a view change runs"),
    ("byz-small-scope", &[7], Needs::ByzantineBuild, Expect::Pass, "byzantine small-scope-mutation backup0; hold",
     "a backup sends messages with view or seq + 1, replays, stale checkpoints"),
    ("byz-far-future", &[8], Needs::ByzantineBuild, Expect::Pass, "byzantine far-future-flood backup0; hold",
     "a backup floods messages far above the high watermark"),
    ("byz-bad-signatures", &[9], Needs::ByzantineBuild, Expect::Pass, "byzantine bad-signatures backup0; hold",
     "a backup sends badly signed and mis-attributed messages"),
    ("byz-wrong-state", &[11], Needs::ByzantineBuild, Expect::Pass, "byzantine wrong-state backup0; hold",
     "a backup's execution results and checkpoint digests differ from the others'"),
];

/// Every scenario.
///
/// # Panics
/// Never: the catalog's steps are checked by a unit test.
#[must_use]
pub fn catalog() -> Vec<Scenario> {
    let base: Vec<Scenario> = CATALOG
        .iter()
        .map(|(name, faults, needs, expect, steps, about)| Scenario {
            name: (*name).to_owned(),
            faults: faults.to_vec(),
            about: (*about).to_owned(),
            needs: *needs,
            expect: *expect,
            steps: parse_steps(steps).unwrap_or_default(),
            macs: false,
        })
        .collect();
    let variants: Vec<Scenario> = base
        .iter()
        .filter(|s| MAC_VARIANTS.contains(&s.name.as_str()))
        .map(|s| Scenario {
            name: format!("{}{MAC_SUFFIX}", s.name),
            about: format!("{}; requests authenticated with MACs", s.about),
            macs: true,
            ..s.clone()
        })
        .collect();
    base.into_iter().chain(variants).collect()
}

/// The name suffix of a scenario run with MAC authenticators.
pub const MAC_SUFFIX: &str = "-macs";

/// Scenarios that also run with MAC authenticators (`NAME-macs`): the
/// view change (re-proposals checked by a new primary's own entry), loss
/// (clients retransmit to backups), Byzantine primaries and twins.
const MAC_VARIANTS: &[&str] = &[
    "baseline",
    "kill-primary",
    "isolate-primary",
    "clients-cut-primary",
    "lossy-links",
    "byz-equivocating-primary",
    "byz-selective-primary",
    "byz-censoring-primary",
    "byz-twins",
    "negative-twins",
];

/// The short set for CI (a few minutes on 2 cores).
pub const CI_SET: &[&str] = &[
    "kill-backup",
    "kill-primary",
    "pause-primary",
    "primary-mute",
    "clients-cut-primary",
    "lagging-replica",
    "lossy-links",
    "client-retries",
    "garbage",
    "impostors",
    "torn-tail",
    "disk-full",
    "clock-jumps",
    "byz-equivocating-primary",
    "byz-forged-view-change",
    "negative-twins",
    "kill-primary-macs",
    "byz-equivocating-primary-macs",
];

/// Resolves `--scenario` arguments: names, comma-separated lists, `ci`
/// (the CI set), `all` (every scenario).
///
/// # Errors
/// An unknown name, with the list of known ones.
pub fn select(args: &[String]) -> Result<Vec<Scenario>, String> {
    let all = catalog();
    let mut out: Vec<Scenario> = Vec::new();
    let names: Vec<&str> = if args.is_empty() {
        CI_SET.to_vec()
    } else {
        args.iter()
            .flat_map(|a| a.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    };
    for name in names {
        let picked: Vec<Scenario> = match name {
            "ci" => all
                .iter()
                .filter(|s| CI_SET.contains(&s.name.as_str()))
                .cloned()
                .collect(),
            "all" => all.clone(),
            _ => vec![all
                .iter()
                .find(|s| s.name == name)
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "unknown scenario {name:?}; known: ci, all, {}",
                        all.iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?],
        };
        for s in picked {
            if !out.iter().any(|o| o.name == s.name) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_catalog_entry_parses_and_round_trips() {
        for (name, _, _, _, text, _) in CATALOG {
            let steps = parse_steps(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!steps.is_empty(), "{name}");
            let again = parse_steps(&format_steps(&steps)).unwrap();
            assert_eq!(steps, again, "{name}");
        }
        let names: Vec<_> = catalog().into_iter().map(|s| s.name).collect();
        for ci in CI_SET {
            assert!(names.iter().any(|n| n == ci), "{ci}");
        }
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "duplicate names");
    }

    #[test]
    fn parses_steps() {
        let steps = parse_steps(
            "kill primary; wait 1500ms; start same ; link r0 backup2 loss=0.5 delay=10; \
             link all jitter=3; split 2; garbage 10; slow-client start; byzantine silent-primary r1",
        )
        .unwrap();
        assert_eq!(steps[0], Step::Kill(Target::Primary));
        assert_eq!(steps[1], Step::Wait(Duration::from_millis(1500)));
        assert_eq!(steps[2], Step::Start(Target::Same));
        assert_eq!(
            steps[3],
            Step::Link(
                Links::Between(Target::Replica(0), Target::Backup(2)),
                LinkRule {
                    loss: 0.5,
                    delay_ms: 10,
                    ..LinkRule::default()
                }
            )
        );
        assert_eq!(
            steps[4],
            Step::Link(
                Links::All,
                LinkRule {
                    jitter_ms: 3,
                    ..LinkRule::default()
                }
            )
        );
        assert_eq!(steps[5], Step::Split(2));
        assert_eq!(
            steps[8],
            Step::Byzantine("silent-primary".into(), Target::Replica(1))
        );
        assert_eq!(
            format_steps(&steps[..3]),
            "kill primary; wait 1500ms; start same"
        );
    }

    #[test]
    fn rejects_bad_steps_with_a_reason() {
        for (text, needle) in [
            ("kill", "missing target"),
            ("kill leader", "bad target"),
            ("wait 3", "bad duration"),
            ("link all", "at least one"),
            ("link all loss=2", "probability"),
            ("link all speed=3", "unknown link rule"),
            ("hold now", "unexpected"),
            ("explode r1", "unknown step"),
            ("kill r1; wait x", "step 2"),
        ] {
            let e = parse_steps(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn selects_sets_and_names() {
        let ci = select(&[]).unwrap();
        assert_eq!(ci.len(), CI_SET.len());
        let some = select(&["kill-backup,garbage".into(), "kill-backup".into()]).unwrap();
        assert_eq!(
            some.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["kill-backup", "garbage"]
        );
        let all = select(&["all".into()]).unwrap();
        assert_eq!(all.len(), catalog().len());
        assert!(all.iter().any(|s| s.expect == Expect::Violation));
        let byz = select(&["byz-double-vote".into()]).unwrap();
        assert_eq!(byz[0].needs, Needs::ByzantineBuild);
        assert!(select(&["nope".into()]).unwrap_err().contains("known"));
    }
}
