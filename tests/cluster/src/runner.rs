//! Runs one scenario against a fresh cluster and checks it.
//!
//! The run: make a testnet behind the fault proxy, start the replicas,
//! connect the workload clients, let the workload run, play the scenario's
//! steps, stop every fault (heal the links, resume, restart), wait for
//! progress, stop the workload, drive the replicas to a common stable
//! checkpoint, read every key back, and check:
//!
//! 1. the client history is linearizable (`pbft-lincheck`);
//! 2. every acknowledged write is present in the read-back;
//! 3. all replicas logged the same state digest for every stable
//!    checkpoint, and report the same stable checkpoint and last executed
//!    sequence number at the end;
//! 4. each replica's peak resident memory stayed under the bound;
//! 5. after the last fault, an operation was acknowledged within the bound;
//! 6. no replica exited on its own (crash, panic); results decode; a
//!    replayed request got its cached reply and did not execute again.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pbft_client::Client;
use pbft_lincheck::{CheckFailure, CheckOptions, Op, Outcome, Output};
use pbft_types::RequestNo;

use crate::cluster::{Cluster, ClusterOptions, Protocol, Runtime, SCENARIO_RUST_LOG};
use crate::proxy::{garbage_burst, LinkRule, Peer, Rules, Source};
use crate::rawclient::{RawClient, SlowClient};
use crate::report::{ScenarioReport, Verdict};
use crate::rng::Rng;
use crate::scenario::{Expect, Links, Needs, Scenario, Step, Target};
use crate::workload::{lost_writes, read_back_keys, Completion, Recorder, Workload, WorkloadSpec};
use crate::{err, Result};

/// How to run scenarios.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The `pbft-node` binary.
    pub node_bin: PathBuf,
    /// Each scenario gets a directory below this one.
    pub work_dir: PathBuf,
    /// Replicas.
    pub replicas: usize,
    /// Workload clients.
    pub clients: usize,
    /// Seed.
    pub seed: u64,
    /// What `hold` waits.
    pub duration: Duration,
    /// Bound on each replica's peak resident memory.
    pub rss_max_mib: u64,
    /// Bound on the time from the end of the faults to progress.
    pub progress_max: Duration,
    /// Keep the logs of passing runs too.
    pub keep_logs: bool,
    /// Protocol parameters of the nodes.
    pub protocol: Protocol,
    /// The workload.
    pub workload: WorkloadSpec,
    /// A `pbft-node` built with `--features byzantine` (Byzantine scenarios
    /// are unavailable without it).
    pub byzantine_node_bin: Option<PathBuf>,
    /// Processes or containers.
    pub runtime: Runtime,
}

/// The raw client's request that `dup-put` made and `dup-replay` replays.
struct Dup {
    client: RawClient,
    request_no: RequestNo,
    message: pbft_types::Message,
}

const DUP_KEY: &str = "dup/k";
const EQUIVOCATION_KEY: &str = "eq/k";
const FENCE_KEY: &str = "fence";

struct Ctx<'a> {
    opts: &'a RunOptions,
    scn: &'a Scenario,
    cluster: Cluster,
    workload: Option<Workload>,
    recorder: Arc<Recorder>,
    rng: Rng,
    last_target: Option<usize>,
    last_primary: usize,
    violations: Vec<String>,
    notes: Vec<String>,
    checked: Vec<String>,
    slow: Option<SlowClient>,
    dup: Option<Dup>,
    step: String,
    tty: bool,
    last_print: Instant,
    started: Instant,
    progress_s: Option<f64>,
}

/// Runs a scenario; never panics on a cluster's misbehaviour, reports it.
pub async fn run(scn: &Scenario, opts: &RunOptions) -> ScenarioReport {
    let started = Instant::now();
    let mut report = ScenarioReport::new(&scn.name, opts.seed);
    report.steps = crate::scenario::format_steps(&scn.steps);
    if scn.needs == Needs::Faketime {
        if crate::cluster::faketime_lib().is_none() {
            report.verdict = Verdict::Unavailable(
                "needs libfaketime (Debian package faketime; `cargo xtask ci` installs it)".into(),
            );
            return report;
        }
        if opts.runtime != Runtime::Process {
            report.verdict = Verdict::Unavailable(
                "clock jumps preload libfaketime, which the FROM-scratch image does not hold; \
                 run without --docker"
                    .into(),
            );
            return report;
        }
    }
    if scn.needs == Needs::Root && !rustix::process::geteuid().is_root() {
        report.verdict = Verdict::Unavailable(
            "needs root: it mounts a small tmpfs under a replica's store to fill its disk".into(),
        );
        return report;
    }
    if scn.needs == Needs::ByzantineBuild && opts.byzantine_node_bin.is_none() {
        report.verdict = Verdict::Unavailable(
            "needs a pbft-node built with `--features byzantine` (cargo xtask cluster-test \
             --byzantine builds it, where the node has that feature)"
                .into(),
        );
        return report;
    }
    let dir = opts.work_dir.join(format!("{}-{}", scn.name, opts.seed));
    let _ = std::fs::remove_dir_all(&dir);
    let outcome = run_in(scn, opts, &dir, &mut report).await;
    if let Err(e) = outcome {
        report.verdict = Verdict::Error(e.to_string());
    }
    report.seconds = started.elapsed().as_secs_f64();
    if report.verdict.is_ok() && !opts.keep_logs {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        report.logs = dir.display().to_string();
    }
    report
}

async fn run_in(
    scn: &Scenario,
    opts: &RunOptions,
    dir: &std::path::Path,
    report: &mut ScenarioReport,
) -> Result<()> {
    let cluster = Cluster::create(ClusterOptions {
        node_bin: opts.node_bin.clone(),
        dir: dir.to_owned(),
        replicas: opts.replicas,
        clients: opts.clients + 3,
        proxy: true,
        protocol: Protocol {
            macs: opts.protocol.macs || scn.macs,
            ..opts.protocol.clone()
        },
        durability: None,
        worker_threads: None,
        rust_log: SCENARIO_RUST_LOG.into(),
        seed: opts.seed,
        byzantine_node_bin: opts.byzantine_node_bin.clone(),
        runtime: opts.runtime.clone(),
        faketime: scn.needs == Needs::Faketime,
    })?;
    let mut ctx = Ctx {
        opts,
        scn,
        cluster,
        workload: None,
        recorder: Arc::new(Recorder::new()),
        rng: Rng::new(opts.seed).fork(0x7363_656e),
        last_target: None,
        last_primary: 0,
        violations: Vec::new(),
        notes: Vec::new(),
        checked: Vec::new(),
        slow: None,
        dup: None,
        step: "start".into(),
        tty: std::io::stderr().is_terminal(),
        last_print: Instant::now(),
        started: Instant::now(),
        progress_s: None,
    };
    let result = ctx.run().await;
    ctx.finish_progress();
    let (ok, failed, unknown) = ctx.recorder.counts();
    report.ok = ok;
    report.failed = failed;
    report.unknown = unknown;
    report.peak_rss_mib = ctx
        .cluster
        .procs()
        .map(|p| p.peak_rss_kib)
        .max()
        .unwrap_or(0)
        / 1024;
    if let Err(e) = result {
        ctx.violations.push(format!("run: stopped early: {e}"));
    }
    if !ctx.violations.is_empty() && scn.expect == Expect::Pass {
        ctx.notes.push(format!(
            "last log lines:\n{}",
            ctx.cluster.log_tail(6).trim_end()
        ));
    }
    let final_metrics = ctx.cluster.all_metrics().await;
    report.views = final_metrics
        .iter()
        .flatten()
        .map(|m| m.int("pbft_view"))
        .max()
        .unwrap_or(0);
    report.stable_seq = final_metrics
        .iter()
        .flatten()
        .map(|m| m.int("pbft_stable_checkpoint_seq"))
        .min()
        .unwrap_or(0);
    report.progress_s = ctx.progress_s;
    report.verdict = Verdict::from_checks(scn.expect, ctx.violations.len());
    report.violations = std::mem::take(&mut ctx.violations);
    report.notes = std::mem::take(&mut ctx.notes);
    report.checked = std::mem::take(&mut ctx.checked);
    if let Some(mut w) = ctx.workload.take() {
        w.stop().await;
        for c in w.clients.drain(..) {
            if let Ok(c) = Arc::try_unwrap(c) {
                c.shutdown().await;
            }
        }
    }
    ctx.cluster.kill_all();
    Ok(())
}

impl Ctx<'_> {
    async fn run(&mut self) -> Result<()> {
        let twins = self.scn.steps.contains(&Step::TwinsSplit);
        let twin_primary = self.scn.steps.contains(&Step::TwinsPrimary);
        // Leading `byzantine` steps choose replicas before anything runs
        // (view 0: the primary is replica 0).
        let leading = self
            .scn
            .steps
            .iter()
            .take_while(|s| matches!(s, Step::Byzantine(..)))
            .count();
        for step in &self.scn.steps[..leading] {
            if let Step::Byzantine(strategy, target) = step {
                let n = self.cluster.n();
                let i = match target {
                    Target::Primary => 0,
                    Target::Backup(k) => (1 + k) % n,
                    Target::Replica(i) => *i % n,
                    Target::Random => self.rng.below(n as u64) as usize,
                    Target::Same => self.last_target.unwrap_or(0),
                };
                self.last_target = Some(i);
                self.cluster.make_byzantine(i, strategy)?;
                self.notes.push(format!(
                    "replica {i} runs the Byzantine strategy {strategy}"
                ));
            }
        }
        self.cluster.start_all()?;
        if twins {
            self.twins_split()?;
        }
        if twin_primary {
            self.twins_primary()?;
        }
        self.step = "connecting".into();
        let mut clients = Vec::new();
        for j in 0..self.opts.clients {
            let mut config = self.cluster.client_config(j)?;
            config.request_timeout_ms = 8_000;
            config.retransmit_timeout_ms = 300;
            config.retransmit_timeout_ms_max = 2_000;
            let client = Client::connect(config)
                .await
                .map_err(|e| err(format!("client {j}: {e}")))?;
            clients.push(Arc::new(client));
        }
        // Twins: each client reaches only its side.
        let needed = if twins {
            self.cluster.config.quorum()
        } else {
            self.cluster.n()
        };
        for (j, c) in clients.iter().enumerate() {
            if !c.wait_connected(needed, Duration::from_secs(30)).await {
                return Err(err(format!(
                    "client {j} connected to {} of {needed} replicas within 30 s; logs:\n{}",
                    c.connected_replicas(),
                    self.cluster.log_tail(10)
                )));
            }
        }
        self.workload = Some(Workload::start(
            clients,
            self.recorder.clone(),
            &WorkloadSpec {
                seed: self.opts.seed,
                ..self.opts.workload.clone()
            },
        ));
        self.step = "warm-up".into();
        self.sleep(Duration::from_secs(2)).await;
        let steps = self.scn.steps[leading..].to_vec();
        for step in &steps {
            self.step = step.to_string();
            self.play(step).await?;
        }
        self.heal_all().await?;
        self.check_all().await
    }

    fn workload(&self) -> Result<&Workload> {
        self.workload.as_ref().ok_or_else(|| err("no workload"))
    }

    async fn sleep(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            self.cluster.poll();
            self.print_progress().await;
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(250))).await;
        }
        self.cluster.poll();
    }

    async fn print_progress(&mut self) {
        let every = if self.tty {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        if self.last_print.elapsed() < every {
            return;
        }
        self.last_print = Instant::now();
        let (ok, fail, unknown) = self.recorder.counts();
        let all = self.cluster.all_metrics().await;
        let exec = all
            .iter()
            .flatten()
            .map(|m| m.int("pbft_last_executed_seq"))
            .max()
            .unwrap_or(0);
        let view = all
            .iter()
            .flatten()
            .map(|m| m.int("pbft_view"))
            .max()
            .unwrap_or(0);
        let up: String = self
            .cluster
            .nodes
            .iter()
            .map(|n| {
                if n.is_paused() {
                    'P'
                } else if n.is_running() {
                    '+'
                } else {
                    '-'
                }
            })
            .collect();
        let line = format!(
            "[{} {:>5.1}s] ok {ok} fail {fail} unknown {unknown} | view {view} exec {exec} | nodes {up} | {}",
            self.scn.name,
            self.started.elapsed().as_secs_f64(),
            self.step
        );
        if self.tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }

    fn finish_progress(&self) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
    }

    async fn resolve(&mut self, target: Target) -> Result<usize> {
        let n = self.cluster.n();
        let primary = match target {
            Target::Primary | Target::Backup(_) => match self.cluster.primary().await {
                Some((p, _)) => {
                    self.last_primary = p;
                    p
                }
                None => self.last_primary,
            },
            _ => 0,
        };
        let i = match target {
            Target::Primary => primary,
            Target::Backup(k) => (primary + 1 + k) % n,
            Target::Replica(i) if i < n => i,
            Target::Replica(i) => return Err(err(format!("no replica {i} in {n}"))),
            Target::Random => self.rng.below(n as u64) as usize,
            Target::Same => self
                .last_target
                .ok_or_else(|| err("`same` before any step chose a replica"))?,
        };
        self.last_target = Some(i);
        Ok(i)
    }

    fn proxy_update(&self, f: impl FnOnce(&mut Rules)) -> Result<()> {
        self.cluster
            .proxy
            .as_ref()
            .ok_or_else(|| err("no fault proxy"))?
            .update(f);
        Ok(())
    }

    fn replica_peer(i: usize) -> Peer {
        Peer::Replica(u32::try_from(i).unwrap_or(u32::MAX))
    }

    async fn play(&mut self, step: &Step) -> Result<()> {
        let n = self.cluster.n();
        let r = Self::replica_peer;
        match step {
            Step::Wait(d) => self.sleep(*d).await,
            Step::Hold => self.sleep(self.opts.duration).await,
            Step::Kill(t) => {
                let i = self.resolve(*t).await?;
                self.cluster.kill(i)?;
            }
            Step::Start(t) => {
                let i = self.resolve(*t).await?;
                self.cluster.start(i)?;
            }
            Step::Term(t) => {
                let i = self.resolve(*t).await?;
                tokio::task::block_in_place(|| self.cluster.terminate(i))?;
            }
            Step::Pause(t) => {
                let i = self.resolve(*t).await?;
                self.cluster.pause(i)?;
            }
            Step::Resume(t) => {
                let i = self.resolve(*t).await?;
                self.cluster.resume(i)?;
            }
            Step::Wipe(t) => {
                let i = self.resolve(*t).await?;
                self.cluster.wipe(i)?;
            }
            Step::DiskFull(t) => {
                let i = self.resolve(*t).await?;
                let what = self.cluster.fill_disk(i, 2 << 20)?;
                self.notes.push(format!("replica {i}: {what}"));
            }
            Step::DiskHeal(t) => {
                let i = self.resolve(*t).await?;
                let deadline = Instant::now() + Duration::from_secs(60);
                while self.cluster.nodes[i].is_running() && Instant::now() < deadline {
                    self.sleep(Duration::from_millis(250)).await;
                    self.cluster.poll();
                }
                if self.cluster.nodes[i].is_running() {
                    self.violations.push(format!(
                        "disk: replica {i} kept running for 60 s on a full disk (a failed write \
                         must stop it)"
                    ));
                    self.cluster.kill(i)?;
                }
                let what = self.cluster.heal_disk(i)?;
                self.notes.push(format!("replica {i}: {what}"));
            }
            Step::Clock(t, seconds) => {
                let i = self.resolve(*t).await?;
                let offset = self.cluster.clock_step(i, *seconds)?;
                self.notes.push(format!(
                    "replica {i}: wall clock stepped {seconds:+} s (now {offset:+} s from real time)"
                ));
            }
            Step::Tear(t) => {
                let i = self.resolve(*t).await?;
                let what = self.cluster.tear(i)?;
                self.notes.push(format!("replica {i}: {what}"));
            }
            Step::RestartAll => {
                for i in 0..n {
                    self.cluster.kill(i)?;
                }
                self.sleep(Duration::from_millis(500)).await;
                self.cluster.start_all()?;
            }
            Step::Rolling => {
                for i in 0..n {
                    self.step = format!("rolling: kill -9 r{i}");
                    self.cluster.kill(i)?;
                    self.sleep(Duration::from_secs(1)).await;
                    self.cluster.start(i)?;
                    self.step = format!("rolling: r{i} restarted");
                    self.sleep(Duration::from_secs(3)).await;
                }
            }
            Step::Reverse => {
                for i in 0..n {
                    self.step = format!("reverse: SIGTERM r{i}");
                    tokio::task::block_in_place(|| self.cluster.terminate(i))?;
                }
                for i in (0..n).rev() {
                    self.step = format!("reverse: start r{i}");
                    self.cluster.start(i)?;
                    self.sleep(Duration::from_millis(500)).await;
                }
            }
            Step::Isolate(t) | Step::IsolateReplicas(t) => {
                let i = self.resolve(*t).await?;
                let clients = matches!(step, Step::Isolate(_));
                self.proxy_update(|rules| {
                    for j in (0..n).filter(|j| *j != i) {
                        rules.set_link(r(i), r(j), LinkRule::cut());
                        rules.set_link(r(j), r(i), LinkRule::cut());
                    }
                    if clients {
                        rules.set_link(Peer::Client, r(i), LinkRule::cut());
                        rules.set_link(r(i), Peer::Client, LinkRule::cut());
                    }
                })?;
            }
            Step::Split(k) => {
                let p = self.resolve(Target::Primary).await?;
                let side_a: Vec<usize> = (0..*k).map(|d| (p + d) % n).collect();
                self.proxy_update(|rules| {
                    for a in &side_a {
                        for b in (0..n).filter(|b| !side_a.contains(b)) {
                            rules.set_link(r(*a), r(b), LinkRule::cut());
                            rules.set_link(r(b), r(*a), LinkRule::cut());
                        }
                    }
                })?;
            }
            Step::Cut(a, b) => {
                let a = self.resolve(*a).await?;
                let b = self.resolve(*b).await?;
                self.last_target = Some(a);
                self.proxy_update(|rules| rules.set_link(r(a), r(b), LinkRule::cut()))?;
            }
            Step::CutClients(t) => {
                let a = self.resolve(*t).await?;
                self.last_target = Some(a);
                self.proxy_update(|rules| rules.set_link(Peer::Client, r(a), LinkRule::cut()))?;
            }
            Step::ExpectRelayed => self.expect_relayed().await,
            Step::Link(links, rule) => {
                let rule = *rule;
                match links {
                    Links::All => self.proxy_update(|rules| {
                        for a in 0..n {
                            for b in (0..n).filter(|b| *b != a) {
                                rules.set_link(r(a), r(b), rule);
                            }
                        }
                    })?,
                    Links::Clients => self.proxy_update(|rules| {
                        for a in 0..n {
                            rules.set_link(Peer::Client, r(a), rule);
                            rules.set_link(r(a), Peer::Client, rule);
                        }
                    })?,
                    Links::Between(a, b) => {
                        let a = self.resolve(*a).await?;
                        let b = self.resolve(*b).await?;
                        self.proxy_update(|rules| rules.set_link(r(a), r(b), rule))?;
                    }
                }
            }
            Step::Heal => self.proxy_update(Rules::heal_links)?,
            Step::Garbage(count) => {
                let mut targets: Vec<std::net::SocketAddr> =
                    self.cluster.nodes.iter().map(|n| n.listen).collect();
                if let Some(p) = &self.cluster.proxy {
                    targets.extend(p.public_addrs());
                }
                let per = (*count / targets.len().max(1)).max(1);
                let mut sent = 0;
                for t in targets {
                    sent += garbage_burst(t, per, &mut self.rng).await?;
                    self.cluster.poll();
                }
                self.notes.push(format!("sent {sent} garbage datagrams"));
            }
            Step::SlowClient(true) => {
                let config = self.cluster.client_config(self.opts.clients)?;
                self.slow = Some(SlowClient::start(config, Duration::from_millis(2))?);
            }
            Step::SlowClient(false) => {
                if let Some(mut s) = self.slow.take() {
                    s.stop().await;
                    self.notes.push(format!(
                        "the slow client sent {} requests and read no reply",
                        s.sent()
                    ));
                }
            }
            Step::DupPut => self.dup_put().await?,
            Step::DupReplay => self.dup_replay().await?,
            Step::EquivocatingClient(rounds) => self.equivocating_client(*rounds).await?,
            Step::TwinsSplit | Step::TwinsPrimary => {} // done before the workload started
            Step::Impostors => self.impostors().await?,
            Step::Byzantine(strategy, t) => {
                let i = self.resolve(*t).await?;
                self.cluster.make_byzantine(i, strategy)?;
                self.notes.push(format!(
                    "replica {i} restarted with the Byzantine strategy {strategy}"
                ));
            }
        }
        Ok(())
    }

    /// Twins of replicas 0 and 1; side A = {0, 1, 2, even clients}, side
    /// B = {0', 1', 3, odd clients}, and the other replicas on side A or
    /// B by parity.
    fn twins_split(&mut self) -> Result<()> {
        let n = self.cluster.n();
        if n < 4 {
            return Err(err("twins-split needs at least 4 replicas"));
        }
        for j in 0..2 {
            self.cluster.add_twin(j)?;
        }
        let side_of = |s: Source| -> u8 {
            match s {
                Source::Replica { id, copy } if id < 2 => copy,
                Source::Replica { id, .. } => u8::from(id % 2 == 1),
                Source::Client(c) => u8::from(c % 2 == 1),
                Source::Unknown => 0,
            }
        };
        let mut sources = Vec::new();
        for id in 0..u32::try_from(n).unwrap_or(0) {
            sources.push(Source::Replica { id, copy: 0 });
            if id < 2 {
                sources.push(Source::Replica { id, copy: 1 });
            }
        }
        for c in 0..(self.opts.clients as u64 + 3) {
            sources.push(Source::Client(c));
        }
        self.proxy_update(|rules| {
            for s in sources {
                let side = side_of(s);
                for j in 0..u32::try_from(n).unwrap_or(0) {
                    let route = if j < 2 {
                        Some(side)
                    } else if u8::from(j % 2 == 1) == side {
                        Some(0)
                    } else {
                        None
                    };
                    rules.set_route(s, j, route);
                }
            }
        })?;
        self.notes.push(
            "twins: replicas 0 and 1 run twice; {0, 1, 2} and {0', 1', 3} each form a quorum"
                .into(),
        );
        Ok(())
    }

    /// Twins of replica 0 with f = 1 (Twins, Bano et al. 2021): copy 0
    /// with replica 1, copy 1 with replicas 2.. (a quorum), links between
    /// the two groups cut; each client reaches every replica but one copy
    /// of replica 0 (by parity). One Byzantine identity: every check must
    /// pass.
    fn twins_primary(&mut self) -> Result<()> {
        let n = u32::try_from(self.cluster.n()).unwrap_or(0);
        if n < 4 {
            return Err(err("twins-primary needs at least 4 replicas"));
        }
        self.cluster.add_twin(0)?;
        let side_of_replica = |id: u32, copy: u8| -> u8 {
            match id {
                0 => copy,
                1 => 0,
                _ => 1,
            }
        };
        let mut sources = vec![
            Source::Replica { id: 0, copy: 0 },
            Source::Replica { id: 0, copy: 1 },
        ];
        sources.extend((1..n).map(|id| Source::Replica { id, copy: 0 }));
        let clients: Vec<Source> = (0..(self.opts.clients as u64 + 3))
            .map(Source::Client)
            .collect();
        self.proxy_update(|rules| {
            for s in &sources {
                let Source::Replica { id, copy } = *s else {
                    continue;
                };
                let side = side_of_replica(id, copy);
                for j in 0..n {
                    let route = if j == 0 {
                        Some(side)
                    } else if side_of_replica(j, 0) == side {
                        Some(0)
                    } else {
                        None
                    };
                    rules.set_route(*s, j, route);
                }
            }
            for s in &clients {
                let Source::Client(c) = *s else { continue };
                rules.set_route(*s, 0, Some(u8::from(c % 2 == 1)));
            }
        })?;
        self.notes.push(
            "twins: replica 0 runs twice; {0, 1} and {0', 2..} are cut apart, clients reach one copy each"
                .into(),
        );
        Ok(())
    }

    async fn dup_put(&mut self) -> Result<()> {
        let slot = self.opts.clients + 1;
        let mut raw = RawClient::start(self.cluster.client_config(slot)?)?;
        if !raw
            .wait_connected(self.cluster.config.quorum(), Duration::from_secs(20))
            .await
        {
            return Err(err("the replaying client could not connect"));
        }
        let op = Op::put(DUP_KEY, "first");
        let bytes = crate::workload::to_kv(&op).encode();
        let (request_no, message) = raw.sign(bytes)?;
        let id = self.recorder.invoke(slot as u64, op);
        raw.broadcast(&message);
        let result = raw
            .await_result(request_no, &message, Duration::from_secs(20))
            .await;
        let completion = match result.as_deref() {
            Some(b"ok") => Completion::Ok(Output::Put),
            Some(other) => Completion::Malformed(other.to_vec()),
            None => Completion::Unknown("no quorum of replies".into()),
        };
        self.recorder.complete(id, &completion);
        if completion != Completion::Ok(Output::Put) {
            self.violations
                .push(format!("dup-put: the first put ended {completion:?}"));
        }
        let client = self
            .workload()?
            .clients
            .first()
            .cloned()
            .ok_or_else(|| err("no client"))?;
        let overwrite = self
            .recorder
            .submit(0, &client, Op::put(DUP_KEY, "second"))
            .await;
        if overwrite != Completion::Ok(Output::Put) {
            self.notes
                .push(format!("dup-put: the overwrite ended {overwrite:?}"));
        }
        self.dup = Some(Dup {
            client: raw,
            request_no,
            message,
        });
        Ok(())
    }

    /// FAULTS.md 24: one request number, two requests, each half of the
    /// replicas gets one. Both are recorded with an unknown outcome (at most
    /// one may execute); the read-back and the digests check the rest.
    async fn equivocating_client(&mut self, rounds: usize) -> Result<()> {
        let slot = self.opts.clients + 2;
        let raw = RawClient::start(self.cluster.client_config(slot)?)?;
        let n = self.cluster.n();
        if !raw.wait_connected(n, Duration::from_secs(20)).await {
            return Err(err("the equivocating client could not connect"));
        }
        let first = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(1));
        let mut sent = 0;
        for round in 0..rounds as u64 {
            let request_no = RequestNo(first + round);
            let a = Op::put(EQUIVOCATION_KEY, format!("a{round}"));
            let b = Op::put(EQUIVOCATION_KEY, format!("b{round}"));
            let ma = raw.sign_as(request_no, crate::workload::to_kv(&a).encode())?;
            let mb = raw.sign_as(request_no, crate::workload::to_kv(&b).encode())?;
            let ia = self.recorder.invoke(slot as u64, a);
            let ib = self.recorder.invoke(slot as u64, b);
            for i in 0..n {
                let to = pbft_types::ReplicaId(u32::try_from(i).unwrap_or(0));
                if raw.send(to, if i < n / 2 { &ma } else { &mb }) {
                    sent += 1;
                }
            }
            self.sleep(Duration::from_millis(150)).await;
            let why = Completion::Unknown("equivocating client: not awaited".into());
            self.recorder.complete(ia, &why);
            self.recorder.complete(ib, &why);
        }
        self.notes.push(format!(
            "the equivocating client sent {rounds} pairs of requests ({sent} messages)"
        ));
        raw.shutdown().await;
        Ok(())
    }

    /// Refusals of connections and handshakes, summed over the replicas.
    async fn refusals(&self) -> u64 {
        self.cluster
            .all_metrics()
            .await
            .iter()
            .flatten()
            .map(|m| {
                m.int("pbft_quic_connections_refused_total")
                    + m.int("pbft_quic_handshakes_failed_total")
            })
            .sum()
    }

    /// FAULTS.md 15 (BRIEF invariant 6): three impostors try for a few
    /// seconds; none may end up with a connection, and the replicas must
    /// have refused them (their refusal counters grow, so the attempts did
    /// reach them). Two live connections under one replica id are the
    /// twins of `negative-twins`.
    async fn impostors(&mut self) -> Result<()> {
        use pbft_crypto::{SecretKey, TlsIdentity};
        use pbft_quic::{ClientEndpoint, ClientEndpointConfig, Mesh, MeshConfig};
        use pbft_types::{ClientEntry, ClientId, ReplicaId};

        let e = |x: &dyn std::fmt::Display| err(format!("impostors: {x}"));
        let before = self.refusals().await;
        let cluster = self.cluster.config.clone();
        // A client whose key no replica knows, on the client API.
        let unknown = SecretKey::generate();
        let rogue_id = ClientId(u64::MAX / 2);
        let mut view = cluster.clone();
        view.clients.push(ClientEntry {
            id: rogue_id,
            public_key: unknown.public_key(),
        });
        let view = view.validated().map_err(|x| e(&x))?;
        let identity = TlsIdentity::generate(&unknown, "impostor-client").map_err(|x| e(&x))?;
        let mut ec = ClientEndpointConfig::new(view, rogue_id, identity);
        ec.bind = "127.0.0.1:0".parse().map_err(|_| err("address"))?;
        let (client, _client_rx) = ClientEndpoint::start(ec).map_err(|x| e(&x))?;
        // Replica 0's id on the mesh (it dials every other replica) with a
        // configured client's key, and with a key nobody knows.
        let mut meshes = Vec::new();
        for (name, key) in [
            ("client key as replica 0", self.cluster.client_key(0)?),
            ("unknown key as replica 0", SecretKey::generate()),
        ] {
            let mut view = cluster.clone();
            view.clients.retain(|c| c.public_key != key.public_key());
            if let Some(r) = view.replicas.first_mut() {
                r.public_key = key.public_key();
            }
            let view = view.validated().map_err(|x| e(&x))?;
            let identity = TlsIdentity::generate(&key, "impostor-replica").map_err(|x| e(&x))?;
            let mut mc = MeshConfig::new(view, ReplicaId(0), identity);
            mc.accept_clients = false;
            mc.socket = Some(std::net::UdpSocket::bind("127.0.0.1:0")?);
            let (mesh, rx) = Mesh::start(mc).map_err(|x| e(&x))?;
            meshes.push((name, mesh, rx));
        }
        self.sleep(Duration::from_secs(3)).await;
        let mut admitted = Vec::new();
        if !client.connected_peers().is_empty() {
            admitted.push(format!(
                "a client with an unknown key reached {:?}",
                client.connected_peers()
            ));
        }
        for (name, mesh, _) in &meshes {
            if !mesh.connected_peers().is_empty() {
                admitted.push(format!("{name} reached {:?}", mesh.connected_peers()));
            }
        }
        client.shutdown().await;
        for (_, mesh, _) in meshes {
            mesh.shutdown().await;
        }
        let refused = self.refusals().await.saturating_sub(before);
        for a in &admitted {
            self.violations
                .push(format!("identity: {a} (FAULTS.md 15: must be refused)"));
        }
        if refused == 0 {
            self.violations.push(
                "identity: the replicas counted no refused connection or handshake while three \
                 impostors tried for 3 s (pbft_quic_connections_refused_total, \
                 pbft_quic_handshakes_failed_total)"
                    .into(),
            );
        }
        self.notes.push(format!(
            "impostors: 3 tried for 3 s, {} admitted, {refused} refusals counted by the replicas",
            admitted.len()
        ));
        Ok(())
    }

    /// PBFT 4.1: with the primary out of the clients' reach, their
    /// retransmissions reach the backups, which relay them; the primary
    /// orders them in its view, so no backup's timer may have fired.
    async fn expect_relayed(&mut self) {
        let metrics = self.cluster.all_metrics().await;
        let sum = |name: &str| metrics.iter().flatten().map(|m| m.int(name)).sum::<u64>();
        let relayed = sum("pbft_requests_relayed_total");
        let started = sum("pbft_view_changes_started_total");
        if relayed == 0 {
            self.violations.push(
                "relay: no backup relayed a request (pbft_requests_relayed_total is 0) although \
                 the clients cannot reach the primary (PBFT 4.1)"
                    .into(),
            );
        }
        if started > 0 {
            self.violations.push(format!(
                "relay: {started} view changes started although the backups could relay every \
                 request to the primary (pbft_view_changes_started_total)"
            ));
        }
        self.checked.push(format!(
            "relay: {relayed} requests relayed by the backups, {started} view changes started"
        ));
    }

    async fn dup_replay(&mut self) -> Result<()> {
        let Some(dup) = self.dup.as_mut() else {
            return Err(err("dup-replay before dup-put"));
        };
        dup.client.broadcast(&dup.message);
        let cached = dup
            .client
            .await_result(
                dup.request_no,
                &dup.message.clone(),
                Duration::from_secs(20),
            )
            .await;
        match cached.as_deref() {
            Some(b"ok") => {}
            Some(other) => self.violations.push(format!(
                "dup-replay: the replayed request got {other:?}, not its cached reply \"ok\""
            )),
            None => self.violations.push(
                "dup-replay: no f + 1 matching replies to a replayed request within 20 s \
                 (a retry must get the cached reply)"
                    .into(),
            ),
        }
        let client = self
            .workload()?
            .clients
            .first()
            .cloned()
            .ok_or_else(|| err("no client"))?;
        let read = self.recorder.submit(0, &client, Op::get(DUP_KEY)).await;
        match read {
            Completion::Ok(Output::Get(Some(v))) if v == b"second" => {}
            Completion::Ok(other) => self.violations.push(format!(
                "dup-replay: after the replay {DUP_KEY} reads {other}: the replayed request executed again"
            )),
            other => self
                .notes
                .push(format!("dup-replay: the read after the replay ended {other:?}")),
        }
        Ok(())
    }

    /// Stops every fault: links healed, twins gone, paused replicas
    /// resumed, stopped ones started. Then waits for progress.
    async fn heal_all(&mut self) -> Result<()> {
        self.step = "healing".into();
        if let Some(mut s) = self.slow.take() {
            s.stop().await;
        }
        if !self.cluster.twins.is_empty() {
            self.cluster.kill_twins()?;
            self.proxy_update(Rules::clear)?;
        }
        self.proxy_update(Rules::heal_links)?;
        for i in 0..self.cluster.n() {
            self.cluster.resume(i)?;
            self.cluster.start(i)?;
        }
        let heal_us = self.recorder.now_us();
        let deadline = Instant::now() + self.opts.progress_max;
        self.step = "waiting for progress".into();
        loop {
            let progressed = first_ok_after(&self.recorder.history(), heal_us);
            if progressed.is_some() || Instant::now() > deadline {
                break;
            }
            self.sleep(Duration::from_millis(250)).await;
        }
        self.step = "settling".into();
        self.sleep(Duration::from_secs(2)).await;
        let progressed = first_ok_after(&self.recorder.history(), heal_us);
        self.progress_s = progressed.map(|us| us as f64 / 1e6);
        match self.progress_s {
            Some(s) if s <= self.opts.progress_max.as_secs_f64() => {}
            Some(s) => self.violations.push(format!(
                "progress: resumed {s:.1} s after the faults stopped (bound {} s)",
                self.opts.progress_max.as_secs()
            )),
            None => self.violations.push(format!(
                "progress: no operation was acknowledged within {} s after the faults stopped",
                self.opts.progress_max.as_secs()
            )),
        }
        Ok(())
    }

    async fn check_all(&mut self) -> Result<()> {
        self.step = "stopping the workload".into();
        if let Some(w) = self.workload.as_mut() {
            w.stop().await;
        }
        self.step = "converging".into();
        let converged = self.converge().await;
        self.step = "reading back".into();
        let history = self.recorder.history();
        let reads_from = self.recorder.now_us();
        let keys = read_back_keys(&history, self.opts.workload.hot_keys, 3_000);
        let mut ops: Vec<Op> = keys.into_iter().map(Op::get).collect();
        ops.push(Op::get(DUP_KEY));
        ops.push(Op::get(EQUIVOCATION_KEY));
        let results = self.workload()?.run_ops(ops).await;
        if self
            .scn
            .steps
            .iter()
            .any(|s| matches!(s, Step::EquivocatingClient(_)))
        {
            let read = match results.last() {
                Some(Completion::Ok(output)) => output.to_string(),
                other => format!("{other:?}"),
            };
            self.notes.push(format!(
                "{EQUIVOCATION_KEY} (written only by the equivocating client) reads back as {read}"
            ));
        }
        let history = self.recorder.history();

        self.step = "checking".into();
        // 1. Linearizability.
        let checked = tokio::task::spawn_blocking({
            let history = history.clone();
            move || {
                pbft_lincheck::check_with(
                    &history,
                    &CheckOptions {
                        search_states_max: 20_000_000,
                    },
                )
                .map(|_| ())
            }
        })
        .await
        .map_err(|e| err(e.to_string()))?;
        self.checked
            .push(format!("linearizability of {} operations", history.len()));
        match checked {
            Ok(()) => {}
            Err(CheckFailure::Violation(v)) => {
                self.violations.push(format!("linearizability: {v}"))
            }
            Err(e @ CheckFailure::Inconclusive(_)) => self
                .violations
                .push(format!("linearizability: inconclusive: {e}")),
        }
        // 2. Acknowledged writes present.
        let (verified, lost) = lost_writes(&history, reads_from);
        self.checked.push(format!(
            "{verified} acknowledged last writes read back ({} keys)",
            self.opts.workload.hot_keys as usize + acked_unique_count(&history)
        ));
        self.violations
            .extend(lost.into_iter().map(|l| format!("lost write: {l}")));
        let acked_unique = history
            .ops()
            .iter()
            .filter(|o| {
                o.op.key()
                    .starts_with(crate::workload::UNIQUE_PREFIX.as_bytes())
            })
            .filter(|o| matches!(o.op, Op::Put { .. }) && matches!(o.outcome, Outcome::Ok { .. }))
            .count();
        if verified == 0 && acked_unique > 0 {
            self.violations
                .push("lost write: the read-back verified no acknowledged write".into());
        }
        self.violations.extend(
            self.recorder
                .malformed()
                .into_iter()
                .map(|m| format!("result: {m}")),
        );
        // 3. Same state at the stable checkpoints.
        self.check_digests(converged);
        // 4. Memory.
        for p in self.cluster.procs() {
            let mib = p.peak_rss_kib / 1024;
            if mib > self.opts.rss_max_mib {
                self.violations.push(format!(
                    "memory: replica {} (copy {}) peaked at {mib} MiB resident (bound {} MiB)",
                    p.replica, p.copy, self.opts.rss_max_mib
                ));
            }
        }
        // 6. Crashes.
        self.cluster.poll();
        for p in self.cluster.procs() {
            if p.byzantine.is_some() {
                self.notes.extend(
                    p.unexpected_exits
                        .iter()
                        .map(|e| format!("the Byzantine replica: {e}")),
                );
            } else {
                self.violations
                    .extend(p.unexpected_exits.iter().map(|e| format!("crash: {e}")));
            }
        }
        Ok(())
    }

    /// Drives the replicas to one last executed sequence number and one
    /// stable checkpoint (fence writes push them past a checkpoint);
    /// returns that checkpoint, or records a violation.
    async fn converge(&mut self) -> Option<u64> {
        let limit = if self.scn.expect == Expect::Violation {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(40)
        };
        let deadline = Instant::now() + limit;
        let mut round = 0u64;
        loop {
            let all = self.cluster.all_metrics().await;
            let exec: Vec<Option<u64>> = all
                .iter()
                .map(|m| m.as_ref().map(|m| m.int("pbft_last_executed_seq")))
                .collect();
            let stable: Vec<Option<u64>> = all
                .iter()
                .map(|m| m.as_ref().map(|m| m.int("pbft_stable_checkpoint_seq")))
                .collect();
            // Only correct replicas must agree.
            let correct: Vec<usize> = (0..all.len())
                .filter(|i| !self.cluster.is_byzantine(*i))
                .collect();
            let same = |v: &[Option<u64>]| {
                let first = correct.first().and_then(|i| v[*i]);
                correct.iter().all(|i| v[*i].is_some() && v[*i] == first)
            };
            let first_stable = correct.first().and_then(|i| stable[*i]);
            if same(&exec) && same(&stable) && first_stable.unwrap_or(0) > 0 {
                return first_stable;
            }
            if Instant::now() > deadline {
                let show = |v: &[Option<u64>]| {
                    v.iter()
                        .map(|x| x.map_or_else(|| "-".to_owned(), |x| x.to_string()))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let views: Vec<Option<u64>> = all
                    .iter()
                    .map(|m| m.as_ref().map(|m| m.int("pbft_view")))
                    .collect();
                self.violations.push(format!(
                    "convergence: replicas did not converge within {} s of fence writes: by replica, \
                     last executed [{}], stable checkpoint [{}], view [{}]",
                    limit.as_secs(),
                    show(&exec),
                    show(&stable),
                    show(&views)
                ));
                return None;
            }
            let ops = (0..self.opts.clients.max(1))
                .map(|c| Op::put(FENCE_KEY, format!("{round}.{c}")))
                .collect();
            round += 1;
            if let Ok(w) = self.workload() {
                let _ = w.run_ops(ops).await;
            }
            self.sleep(Duration::from_millis(200)).await;
        }
    }

    fn check_digests(&mut self, converged: Option<u64>) {
        // seq -> digest -> processes.
        let mut by_seq: BTreeMap<u64, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for p in self.cluster.procs().filter(|p| p.byzantine.is_none()) {
            let label = if p.copy == 0 {
                format!("r{}", p.replica)
            } else {
                format!("r{}'", p.replica)
            };
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            for (seq, digest) in parse_checkpoint_digests(&text) {
                let who = by_seq.entry(seq).or_default().entry(digest).or_default();
                if !who.contains(&label) {
                    who.push(label.clone());
                }
            }
        }
        if by_seq.is_empty() {
            self.violations.push(
                "state digest: no replica logged a stable checkpoint digest (\"checkpoint stable seq=.. state_digest=..\" at debug level in pbft_node::run)"
                    .into(),
            );
            return;
        }
        self.checked.push(format!(
            "state digests of {} stable checkpoints{}",
            by_seq.len(),
            converged.map_or_else(String::new, |s| format!(" (final {s})"))
        ));
        let mut diverged = 0;
        for (seq, digests) in &by_seq {
            if digests.len() > 1 {
                diverged += 1;
                if diverged <= 3 {
                    let parts: Vec<String> = digests
                        .iter()
                        .map(|(d, who)| format!("{} = {}", who.join(","), &d[..d.len().min(12)]))
                        .collect();
                    self.violations.push(format!(
                        "state digest: stable checkpoint {seq}: digests differ: {}",
                        parts.join("; ")
                    ));
                }
            }
        }
        if diverged > 3 {
            self.violations.push(format!(
                "state digest: {} more checkpoints with differing digests",
                diverged - 3
            ));
        }
        if let Some(s) = converged {
            let logged: usize = by_seq.get(&s).map_or(0, |d| d.values().map(Vec::len).sum());
            if logged < self.cluster.n() {
                self.notes.push(format!(
                    "final stable checkpoint {s}: {logged} of {} replicas logged its digest (the others reached it by state transfer)",
                    self.cluster.n()
                ));
            }
        }
    }
}

fn acked_unique_count(history: &pbft_lincheck::History) -> usize {
    history
        .ops()
        .iter()
        .filter(|o| {
            o.op.key()
                .starts_with(crate::workload::UNIQUE_PREFIX.as_bytes())
        })
        .filter(|o| matches!(o.op, Op::Put { .. }) && matches!(o.outcome, Outcome::Ok { .. }))
        .count()
}

/// Microseconds from `from_us` to the first acknowledgement of an
/// operation invoked at or after `from_us`.
#[must_use]
pub fn first_ok_after(history: &pbft_lincheck::History, from_us: u64) -> Option<u64> {
    history
        .ops()
        .iter()
        .filter(|o| o.invoke_us >= from_us)
        .filter_map(|o| match o.outcome {
            Outcome::Ok { at_us, .. } => Some(at_us - from_us),
            _ => None,
        })
        .min()
}

/// `(seq, digest)` of every "checkpoint stable" line of a node log.
#[must_use]
pub fn parse_checkpoint_digests(log: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for line in log.lines().filter(|l| l.contains("checkpoint stable")) {
        let line = strip_ansi(line);
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|t| t.strip_prefix(name))
                .map(str::to_owned)
        };
        if let (Some(seq), Some(digest)) = (field("seq="), field("state_digest=")) {
            if let Ok(seq) = seq.parse() {
                out.push((seq, digest));
            }
        }
    }
    out
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_checkpoint_lines_with_and_without_colour() {
        let log = "2026-11-25T05:00:00Z DEBUG pbft_node::run: checkpoint stable seq=16 state_digest=abcd\n\
                   2026-11-25T05:00:01Z  INFO pbft_node::run: replica started\n\
                   \x1b[2m2026\x1b[0m \x1b[34mDEBUG\x1b[0m \x1b[2mpbft_node::run\x1b[0m\x1b[2m:\x1b[0m checkpoint stable \x1b[3mseq\x1b[0m\x1b[2m=\x1b[0m32 \x1b[3mstate_digest\x1b[0m\x1b[2m=\x1b[0mef01\n";
        assert_eq!(
            parse_checkpoint_digests(log),
            vec![(16, "abcd".to_owned()), (32, "ef01".to_owned())]
        );
    }

    #[test]
    fn progress_is_measured_from_the_end_of_the_faults() {
        let r = Recorder::new();
        let a = r.invoke(1, Op::get("k"));
        r.complete(a, &Completion::Ok(Output::absent()));
        let from = r.now_us() + 1;
        assert_eq!(first_ok_after(&r.history(), from), None);
        std::thread::sleep(Duration::from_millis(2));
        let b = r.invoke(1, Op::get("k"));
        r.complete(b, &Completion::Ok(Output::absent()));
        assert!(first_ok_after(&r.history(), from).unwrap() >= 1_000);
    }
}
