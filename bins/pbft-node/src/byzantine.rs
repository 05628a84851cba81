//! Scripted Byzantine behaviour for cluster tests (FAULTS.md 1 to 11),
//! compiled only with the `byzantine` cargo feature and never in a default
//! build. `PBFT_BYZANTINE=<strategy>[:<seconds>]` in the environment makes
//! this replica run one of [`pbft_core::byzantine`]'s strategies between
//! its protocol core and its transport, for `<seconds>` after start
//! (default: for ever), then behave honestly.
//!
//! A default build refuses to start when `PBFT_BYZANTINE` is set, so that a
//! test cannot believe it runs a Byzantine replica when it does not.

use pbft_core::byzantine::{
    Action, CensoringPrimary, Context, DoubleVotingBackup, EquivocatingPrimary, FarFutureFlood,
    ForgedViewChange, SelectivePrimary, SilentPrimary, SmallScopeMutation, Strategy, Until,
    WrongState,
};
use pbft_core::{Input, Output, Time};
use pbft_crypto::Signer;
use pbft_types::{ClientId, ClusterConfig, ReplicaId};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::NodeError;

/// The environment variable that selects a strategy.
pub const ENV: &str = "PBFT_BYZANTINE";

/// The strategies a node can run, by name.
pub const STRATEGIES: &[&str] = &[
    "equivocating-primary",
    "double-voting-backup",
    "silent-primary",
    "selective-primary",
    "censoring-primary",
    "forged-view-change",
    "small-scope-mutation",
    "far-future-flood",
    "bad-signatures",
    "wrong-state",
];

fn strategy(name: &str) -> Option<Box<dyn Strategy + Send>> {
    Some(match name {
        "equivocating-primary" => Box::new(EquivocatingPrimary::new()),
        "double-voting-backup" => Box::new(DoubleVotingBackup::new()),
        "silent-primary" => Box::new(SilentPrimary),
        "selective-primary" => Box::new(SelectivePrimary),
        "censoring-primary" => Box::new(CensoringPrimary {
            client: ClientId(1),
        }),
        "forged-view-change" => Box::new(ForgedViewChange::new()),
        "small-scope-mutation" => Box::new(SmallScopeMutation::new()),
        "far-future-flood" => Box::new(FarFutureFlood::new()),
        "bad-signatures" => Box::new(pbft_core::byzantine::BadSignatures::new()),
        "wrong-state" => Box::new(WrongState),
        _ => return None,
    })
}

/// A strategy wrapped around this replica's outputs.
pub struct Byzantine {
    strategy: Box<dyn Strategy + Send>,
    signer: Signer<ReplicaId>,
    config: ClusterConfig,
    rng: ChaCha8Rng,
    delayed: Vec<(Time, Output)>,
}

impl Byzantine {
    /// The strategy named by [`ENV`], if set.
    ///
    /// # Errors
    /// [`NodeError::Other`] for an unknown strategy or duration.
    pub fn from_env(
        signer: Signer<ReplicaId>,
        config: ClusterConfig,
    ) -> Result<Option<Self>, NodeError> {
        let Ok(spec) = std::env::var(ENV) else {
            return Ok(None);
        };
        let (name, seconds) = match spec.split_once(':') {
            Some((n, s)) => (
                n,
                Some(s.parse::<u64>().map_err(|_| {
                    NodeError::Other(format!("{ENV}={spec}: the duration is not whole seconds"))
                })?),
            ),
            None => (spec.as_str(), None),
        };
        let inner = strategy(name).ok_or_else(|| {
            NodeError::Other(format!(
                "{ENV}={spec}: unknown strategy; one of {}",
                STRATEGIES.join(", ")
            ))
        })?;
        let strategy: Box<dyn Strategy + Send> = match seconds {
            Some(s) => Box::new(Until {
                strategy: inner,
                until: Time(s.saturating_mul(1_000_000)),
            }),
            None => inner,
        };
        tracing::warn!(
            strategy = name,
            ?seconds,
            "BYZANTINE replica: this node misbehaves on purpose (test build)"
        );
        let seed = u64::from(signer.id().0) ^ 0x6279_7a61;
        Ok(Some(Self {
            strategy,
            signer,
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            delayed: Vec::new(),
        }))
    }

    /// Whether the replica sees `input`.
    pub fn incoming(&mut self, now: Time, input: &Input) -> bool {
        let Self {
            strategy,
            signer,
            config,
            rng,
            ..
        } = self;
        let ctx = Context {
            me: signer.id(),
            signer,
            config,
            now,
        };
        strategy.incoming(&ctx, input, rng)
    }

    /// Rewrites the replica's outputs in place; delayed ones come out on a
    /// later call once due.
    pub fn rewrite(&mut self, now: Time, outputs: &mut Vec<Output>) {
        let Self {
            strategy,
            signer,
            config,
            rng,
            delayed,
        } = self;
        let ctx = Context {
            me: signer.id(),
            signer,
            config,
            now,
        };
        let mut out = Vec::with_capacity(outputs.len());
        let (due, later): (Vec<_>, Vec<_>) = delayed.drain(..).partition(|(at, _)| *at <= now);
        *delayed = later;
        out.extend(due.into_iter().map(|(_, o)| o));
        for output in outputs.drain(..) {
            for action in strategy.outgoing(&ctx, output, rng) {
                match action {
                    Action::Emit(o) => out.push(o),
                    Action::Delay { at, output } => delayed.push((at, output)),
                }
            }
        }
        *outputs = out;
    }
}
