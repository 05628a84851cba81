//! `cargo xtask`: the one entry point for project automation.
//!
//! - `cargo xtask ci`: installs what this machine lacks (when it can), then
//!   runs the format check, clippy with warnings denied, every test, and the
//!   short cluster test (`PBFT_CI_CLUSTER_TEST=0` skips it).
//! - `cargo xtask demo`, `cluster-test`, `bench`: see `cargo xtask help`.
//!
//! It has no dependencies so that it builds in seconds on a fresh machine.

mod image;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

const HELP: &str = "\
cargo xtask <command>

Commands:
  ci            install missing system packages, then fmt check, clippy -D warnings, all tests,
                the CI set of cluster-test scenarios (PBFT_CI_CLUSTER_TEST=0 skips it)
  demo          a 4-replica cluster on loopback, a workload, the primary killed half way
                (dev build; about a minute)
  cluster-test  fault scenarios against real node processes, one verdict each (dev build)
                [--scenario NAME|ci|all]... [--replicas N] [--seed S] [--duration SECS]
                [--steps 'kill primary; hold; start same'] [--list] [--keep-logs] [--docker]
                [--docker: run the replicas in containers of a FROM-scratch image]
                [--no-byzantine: skip the second build, pbft-node --features byzantine, that
                 the byz-* scenarios run (they then report UNAVAILABLE)]
  bench         throughput/latency sweep of a loopback cluster, table + CSV + SVG plot in
                target/bench (RELEASE build) [--quick] [--clients 1,8] [--batches 16,256]
                [--payloads 64,1024] [--in-flight 1,32: requests outstanding per client]
                [--fanout all|primary] [--worker-threads N] [--window SECS]
                [--durability MODE] [--dev]
                [--rate 24000,50%: open-loop points at offered rates, req/s or % of the
                 series' closed-loop peak] [--open-clients N] [--no-closed-loop]
  image         build the pbft-node container image (FROM scratch, no base image pulled)
  help          this text
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("image") => image::image(&args[1..]),
        Some("demo") => harness("demo", &args[1..]),
        Some("cluster-test") => harness("cluster-test", &args[1..]),
        Some("bench") => harness("bench", &args[1..]),
        Some("help" | "-h" | "--help") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Where cargo puts build outputs: `CARGO_TARGET_DIR` or `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        }
        None => root.join("target"),
    }
}

/// `cluster-test --byzantine`: builds `pbft-node` with its `byzantine`
/// feature, keeps that binary as `pbft-node-byzantine`, and builds the
/// default binary again (cargo keeps both, so later runs only copy).
/// Returns the harness arguments that name it, or none (with a message)
/// when this revision's node has no such feature.
fn byzantine_build(root: &Path) -> Result<Vec<String>, String> {
    let manifest = std::fs::read_to_string(root.join("bins/pbft-node/Cargo.toml"))
        .map_err(|e| format!("reading bins/pbft-node/Cargo.toml: {e}"))?;
    if !manifest
        .lines()
        .any(|l| l.trim_start().starts_with("byzantine"))
    {
        println!(
            "== xtask cluster-test: pbft-node has no `byzantine` feature in this revision; \
             the byz-* scenarios will report UNAVAILABLE"
        );
        return Ok(Vec::new());
    }
    println!("== xtask cluster-test: cargo build -p pbft-node --features byzantine");
    run(Command::new(cargo()).args(["build", "-p", "pbft-node", "--features", "byzantine"]))?;
    let dir = target_dir(root).join("debug");
    let byzantine = dir.join("pbft-node-byzantine");
    std::fs::copy(dir.join("pbft-node"), &byzantine)
        .map_err(|e| format!("copying the byzantine build: {e}"))?;
    run(Command::new(cargo()).args(["build", "-p", "pbft-node"]))?;
    Ok(vec![
        "--byzantine-node-bin".to_owned(),
        byzantine.display().to_string(),
    ])
}

/// The image `cluster-test --docker` builds and runs replicas in.
const DOCKER_TEST_IMAGE: &str = "pbft-node:cluster-test";

/// `demo`, `cluster-test` and `bench`: build `pbft-node` once, then run the
/// harness (`tests/cluster`, package `pbft-cluster`) with it. The demo and
/// cluster-test use the dev profile, like `cargo test` (dependencies are
/// optimized in it, so RocksDB is not built twice); bench uses the release
/// profile unless `--dev` is given.
fn harness(command: &str, args: &[String]) -> Result<(), String> {
    let root = workspace_root();
    env::set_current_dir(&root).map_err(|e| format!("cannot enter {}: {e}", root.display()))?;
    let mut args: Vec<String> = args.to_vec();
    let release = if command == "bench" {
        let dev = args.iter().any(|a| a == "--dev");
        args.retain(|a| a != "--dev");
        !dev
    } else {
        false
    };
    let profile: &[&str] = if release { &["--release"] } else { &[] };
    let profile_dir = if release { "release" } else { "debug" };
    if release {
        println!(
            "== xtask {command}: RELEASE build (cargo build --release; the first one builds RocksDB \
             again for the release profile); pass --dev to measure the dev build"
        );
    }
    println!(
        "== xtask {command}: cargo build -p pbft-node {}",
        profile.join(" ")
    );
    run(Command::new(cargo())
        .args(["build", "-p", "pbft-node"])
        .args(profile))?;
    let node_bin = target_dir(&root).join(profile_dir).join("pbft-node");
    if !node_bin.exists() {
        return Err(format!("{} was not built", node_bin.display()));
    }
    let mut harness_args: Vec<String> = vec![
        command.to_owned(),
        "--node-bin".to_owned(),
        node_bin.display().to_string(),
    ];
    if command == "cluster-test" {
        // The byz-* scenarios (some are in the CI set) need the node built
        // with scripted misbehaviour; cargo keeps both builds, so after the
        // first time this costs a copy. `--byzantine` is accepted and is
        // the default.
        let skip = args.iter().any(|a| a == "--no-byzantine");
        args.retain(|a| a != "--byzantine" && a != "--no-byzantine");
        if !skip {
            harness_args.extend(byzantine_build(&root)?);
        }
    }
    if command == "cluster-test" && args.iter().any(|a| a == "--docker") {
        // The same dev binary as the process runs, staged with its shared
        // libraries into a FROM-scratch image (`cargo xtask image`); fails
        // with a clear message when no Docker engine answers.
        args.retain(|a| a != "--docker");
        println!("== xtask cluster-test: --docker: image {DOCKER_TEST_IMAGE} from the dev build");
        image::image(&[
            "--binary".to_owned(),
            node_bin.display().to_string(),
            "--tag".to_owned(),
            DOCKER_TEST_IMAGE.to_owned(),
        ])?;
        harness_args.extend(["--docker-image".to_owned(), DOCKER_TEST_IMAGE.to_owned()]);
    }
    match command {
        "cluster-test" => harness_args.extend([
            "--work-dir".to_owned(),
            target_dir(&root).join("cluster-test").display().to_string(),
        ]),
        "demo" => harness_args.extend([
            "--work-dir".to_owned(),
            target_dir(&root).join("demo").display().to_string(),
        ]),
        _ => {
            let out = target_dir(&root).join("bench");
            harness_args.extend([
                "--work-dir".to_owned(),
                out.join("run").display().to_string(),
                "--out-dir".to_owned(),
                out.display().to_string(),
                "--build".to_owned(),
                profile_dir.replace("debug", "dev"),
            ]);
        }
    }
    harness_args.extend(args);
    println!(
        "== xtask {command}: cargo run -p pbft-cluster {}-- {}",
        if release { "--release " } else { "" },
        harness_args.join(" ")
    );
    run(Command::new(cargo())
        .args(["run", "-q", "-p", "pbft-cluster", "--bin", "pbft-cluster"])
        .args(profile)
        .arg("--")
        .args(&harness_args))
}

fn workspace_root() -> PathBuf {
    // xtask lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// A Debian package the build needs, and why.
struct SystemPackage {
    name: &'static str,
    why: &'static str,
    /// Needed only when this workspace path exists.
    needed_if: &'static str,
}

const SYSTEM_PACKAGES: &[SystemPackage] = &[
    SystemPackage {
        name: "libclang-dev",
        why: "bindgen in librocksdb-sys (pbft-storage) needs libclang",
        needed_if: "crates/pbft-storage",
    },
    SystemPackage {
        name: "faketime",
        why: "cluster-test's clock-jumps scenario preloads libfaketime into replicas",
        needed_if: "tests/cluster",
    },
];

fn ci() -> Result<(), String> {
    let root = workspace_root();
    env::set_current_dir(&root).map_err(|e| format!("cannot enter {}: {e}", root.display()))?;
    let started = Instant::now();
    ensure_system_packages(&root)?;
    ensure_rust_components()?;
    let mut timings = Vec::new();
    let steps: &[(&str, &[&str])] = &[
        ("format", &["fmt", "--all", "--", "--check"]),
        (
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
        ),
        ("tests", &["test", "--workspace", "--locked"]),
    ];
    for (name, args) in steps {
        let t = Instant::now();
        println!("\n== xtask ci: {name}: cargo {}", args.join(" "));
        run(Command::new(cargo()).args(*args))?;
        timings.push((*name, t.elapsed().as_secs_f64()));
    }
    // The short cluster test (tests/cluster): real processes, real faults.
    if env::var("PBFT_CI_CLUSTER_TEST").as_deref() == Ok("0") {
        println!("\n== xtask ci: cluster-test skipped (PBFT_CI_CLUSTER_TEST=0)");
    } else {
        let t = Instant::now();
        println!("\n== xtask ci: cluster-test (the CI set of fault scenarios)");
        harness("cluster-test", &[])?;
        timings.push(("cluster", t.elapsed().as_secs_f64()));
    }
    println!("\n== xtask ci: all steps passed");
    for (name, secs) in timings {
        println!("   {name:<8} {secs:>8.1} s");
    }
    println!("   total    {:>8.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn cargo() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn ensure_system_packages(root: &Path) -> Result<(), String> {
    let has_dpkg = Command::new("dpkg-query").arg("--version").output().is_ok();
    let wanted: Vec<&SystemPackage> = SYSTEM_PACKAGES
        .iter()
        .filter(|p| root.join(p.needed_if).exists())
        .collect();
    if wanted.is_empty() {
        println!("== xtask ci: no system packages needed by this revision");
        return Ok(());
    }
    if !has_dpkg {
        for p in &wanted {
            println!(
                "== xtask ci: not a Debian system; make sure {} is installed ({})",
                p.name, p.why
            );
        }
        return Ok(());
    }
    let missing: Vec<&&SystemPackage> = wanted.iter().filter(|p| !is_installed(p.name)).collect();
    if missing.is_empty() {
        let names: Vec<&str> = wanted.iter().map(|p| p.name).collect();
        println!("== xtask ci: system packages present: {}", names.join(", "));
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    let command = format!(
        "apt-get install -y --no-install-recommends {}",
        names.join(" ")
    );
    for p in &missing {
        println!("== xtask ci: missing {}: {}", p.name, p.why);
    }
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo", "-n"] };
    let apt = |args: &[&str]| -> Result<(), String> {
        let mut full: Vec<&str> = sudo.to_vec();
        full.push("apt-get");
        full.extend_from_slice(args);
        let (program, rest) = full.split_first().ok_or("empty command")?;
        run(Command::new(program)
            .args(rest)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    let installed = apt(&["install", "-y", "--no-install-recommends"]
        .iter()
        .copied()
        .chain(names.iter().copied())
        .collect::<Vec<_>>())
    .or_else(|_| {
        apt(&["update"])?;
        apt(&["install", "-y", "--no-install-recommends"]
            .iter()
            .copied()
            .chain(names.iter().copied())
            .collect::<Vec<_>>())
    });
    match installed {
        Ok(()) => {
            println!("== xtask ci: installed {}", names.join(", "));
            Ok(())
        }
        Err(e) => Err(format!(
            "could not install {} ({e}). Run as root:\n    apt-get update && {command}",
            names.join(", ")
        )),
    }
}

fn ensure_rust_components() -> Result<(), String> {
    for (component, probe) in [("rustfmt", "fmt"), ("clippy", "clippy")] {
        let present = Command::new(cargo())
            .args([probe, "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !present {
            println!("== xtask ci: installing the {component} component with rustup");
            run(Command::new("rustup").args(["component", "add", component]))
                .map_err(|e| format!("{e}; run: rustup component add {component}"))?;
            println!("== xtask ci: installed {component}");
        }
    }
    Ok(())
}
