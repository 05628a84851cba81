//! `cargo xtask`: the one entry point for project automation.
//!
//! - `cargo xtask ci`: installs what this machine lacks (when it can), then
//!   runs the format check, clippy with warnings denied, and every test.
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
  ci            install missing system packages, then fmt check, clippy -D warnings, all tests
  demo          run a 4-replica cluster on loopback through a view change (not built yet)
  cluster-test  run fault scenarios against real node processes (not built yet)
  bench         throughput/latency sweep of a loopback cluster (not built yet)
  image         build the pbft-node container image (FROM scratch, no base image pulled)
  help          this text
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("image") => image::image(&args[1..]),
        Some("demo") => not_built(
            "demo",
            "view change (issue 4: the demo kills the primary) and the demo driver (issue 9); \
             meanwhile README.md shows how to run a cluster by hand",
        ),
        Some("cluster-test") => not_built("cluster-test", "the fault-injection harness (issue 9)"),
        Some("bench") => not_built("bench", "the benchmark sweep (issue 9)"),
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

fn not_built(what: &str, needs: &str) -> Result<(), String> {
    Err(format!(
        "`cargo xtask {what}` is not built yet: it needs {needs}, which this revision does not \
         have yet. Nothing was run."
    ))
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

const SYSTEM_PACKAGES: &[SystemPackage] = &[SystemPackage {
    name: "libclang-dev",
    why: "bindgen in librocksdb-sys (pbft-storage) needs libclang",
    needed_if: "crates/pbft-storage",
}];

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
