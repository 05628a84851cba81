//! `cargo xtask image`: the `pbft-node` container image, built without
//! pulling any base image.
//!
//! Builds the release binary, stages it with exactly the shared libraries
//! `ldd` reports (at the paths the dynamic loader looks for them) into a
//! temporary build context next to `deploy/Dockerfile` (`FROM scratch`), and
//! runs `docker build`. Without a Docker engine it says so and fails, leaving
//! the staged context for a machine that has one.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cargo, run, workspace_root};

/// The image's non-root user and group (numeric: a scratch image has no
/// user database to look names up in; `/etc/passwd` is written for tools).
const UID: u32 = 10001;

const USAGE: &str = "\
cargo xtask image [--tag TAG] [--binary PATH] [--context DIR]

  --tag TAG       image tag (default pbft-node:latest)
  --binary PATH   stage this pbft-node instead of building target/release/pbft-node
  --context DIR   stage the build context here and keep it (default: a temporary
                  directory, removed after a successful build)
";

struct Options {
    tag: String,
    binary: Option<PathBuf>,
    context: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        tag: "pbft-node:latest".to_owned(),
        binary: None,
        context: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value\n\n{USAGE}"))
        };
        match arg.as_str() {
            "--tag" => options.tag = value("--tag")?,
            "--binary" => options.binary = Some(PathBuf::from(value("--binary")?)),
            "--context" => options.context = Some(PathBuf::from(value("--context")?)),
            "-h" | "--help" => {
                print!("{USAGE}");
                return Err(String::new());
            }
            other => return Err(format!("unknown option {other:?}\n\n{USAGE}")),
        }
    }
    Ok(options)
}

/// Runs `cargo xtask image ARGS`.
pub fn image(args: &[String]) -> Result<(), String> {
    let options = match parse(args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => return Ok(()),
        Err(e) => return Err(e),
    };
    let root = workspace_root();
    let binary = match options.binary {
        Some(b) => b,
        None => {
            println!("== cargo build --release -p pbft-node");
            run(Command::new(cargo()).current_dir(&root).args([
                "build",
                "--release",
                "-p",
                "pbft-node",
            ]))?;
            target_dir(&root).join("release/pbft-node")
        }
    };
    if !binary.is_file() {
        return Err(format!("{} is not a file", binary.display()));
    }
    let (context, keep) = match options.context {
        Some(dir) => (dir, true),
        None => (
            env::temp_dir().join(format!("pbft-image-{}", std::process::id())),
            false,
        ),
    };
    stage(&root, &binary, &context)?;
    println!("== staged the build context in {}", context.display());

    if let Err(why) = docker_available() {
        return Err(format!(
            "no Docker engine is available (`docker info` failed: {why}); the image was NOT \
             built. The build context is staged in {}; on a machine with Docker run:\n  \
             docker build -t {} {}",
            context.display(),
            options.tag,
            context.display()
        ));
    }
    println!("== docker build -t {} {}", options.tag, context.display());
    run(Command::new("docker")
        .args(["build", "-t", &options.tag])
        .arg(&context))?;
    if !keep {
        let _ = fs::remove_dir_all(&context);
    }
    let size = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Size}}", &options.tag])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    match size {
        Some(bytes) => println!(
            "built {} ({:.1} MiB)",
            options.tag,
            bytes as f64 / (1024.0 * 1024.0)
        ),
        None => println!("built {}", options.tag),
    }
    Ok(())
}

/// `CARGO_TARGET_DIR` when set, else `ROOT/target`.
fn target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// `Ok` when `docker info` answers; otherwise why not.
fn docker_available() -> Result<(), String> {
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Err(e) => Err(format!("cannot run docker: {e}")),
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            Err(format!("{}: {}", out.status, first.trim()))
        }
    }
}

/// Writes the build context: `Dockerfile`, `rootfs/` (binary, libraries,
/// a few files in `/etc`) and the empty `data/` that becomes `/data`.
fn stage(root: &Path, binary: &Path, context: &Path) -> Result<(), String> {
    if context.exists() {
        fs::remove_dir_all(context)
            .map_err(|e| format!("cannot clear {}: {e}", context.display()))?;
    }
    let rootfs = context.join("rootfs");
    mkdir(&rootfs.join("usr/local/bin"))?;
    mkdir(&rootfs.join("etc"))?;
    mkdir(&context.join("data"))?;
    copy(&root.join("deploy/Dockerfile"), &context.join("Dockerfile"))?;

    let staged = rootfs.join("usr/local/bin/pbft-node");
    copy(binary, &staged)?;
    strip_debug_info(&staged);

    let libraries = shared_libraries(binary)?;
    for library in &libraries {
        // fs::copy follows symbolic links: the image gets the file itself at
        // the path the loader resolved (e.g. /lib64/ld-linux-x86-64.so.2).
        let relative = library
            .strip_prefix("/")
            .map_err(|_| format!("ldd gave a relative path {}", library.display()))?;
        let to = rootfs.join(relative);
        if let Some(parent) = to.parent() {
            mkdir(parent)?;
        }
        copy(library, &to)?;
        println!("   {}", library.display());
    }
    write(
        &rootfs.join("etc/passwd"),
        &format!(
            "root:x:0:0:root:/:/nonexistent\npbft:x:{UID}:{UID}:pbft-node:/data:/nonexistent\n"
        ),
    )?;
    write(
        &rootfs.join("etc/group"),
        &format!("root:x:0:\npbft:x:{UID}:\n"),
    )?;
    // Replica addresses are host names (compose service names): resolve them
    // with /etc/hosts and the DNS server Docker writes to /etc/resolv.conf.
    write(&rootfs.join("etc/nsswitch.conf"), "hosts: files dns\n")?;
    Ok(())
}

/// The shared libraries `binary` loads, as absolute paths, from `ldd`
/// (the dynamic loader included; the kernel's vDSO left out).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("cannot run ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "ldd {} failed: {}{}",
            binary.display(),
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse_ldd(&text)
}

fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libraries = Vec::new();
    if text.contains("statically linked") {
        // Nothing to stage: the binary runs FROM scratch as it is.
        return Ok(libraries);
    }
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("=> not found") {
            return Err(format!("ldd: a library is missing: {line}"));
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)" or "linux-vdso.so.1 (0x...)".
        let path = match line.split_once("=>") {
            Some((_, right)) => right.trim(),
            None => line,
        };
        let path = path.split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    if libraries.is_empty() {
        return Err("ldd reported no libraries; is the binary dynamically linked?".to_owned());
    }
    Ok(libraries)
}

/// Drops debug sections from the staged copy when `strip` is installed
/// (the release profile keeps line tables for backtraces on the host).
fn strip_debug_info(path: &Path) {
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        println!("   (strip not available: the binary keeps its debug line tables)");
    }
}

fn mkdir(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_parses() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f1)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        assert_eq!(
            parse_ldd(text),
            Ok(vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libstdc++.so.6"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ])
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
        assert_eq!(parse_ldd("\tstatically linked\n"), Ok(vec![]));
        assert!(parse_ldd("").is_err());
    }
}
