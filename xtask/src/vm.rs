//! `cargo xtask vm`: a throw-away Debian 12 kernel under qemu (TCG) for what this host's kernel
//! cannot do, kernel IPVS first of all. See shared docs/testing.md, "Kernel IPVS in a VM".
//!
//! Everything comes from Debian packages (`apt-get download`, `dpkg-deb -x`), never installed:
//! installing qemu-system-x86 would remove the machine's qemu-utils backport. Assets are built
//! once into `.cache/vm/` (git-ignored) and reused; each stage leaves a marker when complete.
//!
//! The guest: the stock kernel booted as an uncompressed `vmlinux` (PVH, no BIOS boot: ~2 s), an
//! initramfs with busybox, `ipvsadm`, iproute2's `ip` and their libraries, the
//! IPVS/veth/bridge/tunnel/8021q module closure and `tests/vm/init.sh` as `/init`. A run appends a second
//! cpio with the payload and `/payload.sh`; the payload's output and exit code come back on the
//! second serial port.
//!
//! In-guest tests are the `#[ignore]`d tests of lb-userspace's `guest` test target
//! (`lb-userspace/tests/guest/`); `cargo xtask vm test` builds that harness and the `lb` binary
//! (with its XDP program)
//! statically (into `$LB_VM_TARGET_DIR`, default `target/vm`) and runs them in the guest, with
//! `lb` as `/bin/lb` and `LB_BIN` naming it.
//!
//! `cargo xtask vm bench` runs the in-guest benchmark (`vm_bench::`, which `vm test` skips):
//! the same harness, and an `lb` built with its XDP program (in `$LB_VM_TARGET_DIR/xdp`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    hash::{Hash as _, Hasher as _},
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail, ensure};
use clap::Subcommand;

use crate::{run, workspace_root};

/// Bump to rebuild every cached stage after changing how it is made.
const RECIPE: u32 = 8;
/// The guest's `/init`.
const INIT: &str = include_str!("../../tests/vm/init.sh");
/// Loaded at boot, in this order; other IPVS schedulers load on demand (`request_module`).
/// `ipip` makes every namespace's `tunl0`, which decapsulates IPVS tunnel traffic on a real;
/// `ip6_tunnel`, `ip_gre`, `ip6_gre`, `sit` make `ip6tnl0`, `gre0`, `ip6gre0`, `sit0` (IPv6 in
/// IPv4, for mixed-family reals), and `fou`/`fou6` take
/// GUE ports (`lb realserver up --tunnel`): loaded here because the guest's modprobe cannot
/// resolve the aliases (`rtnl-link-*`, `net-pf-*`) the kernel asks for on demand.
/// The netfilter ones let a test mark packets for firewall-mark services (the kernel would ask
/// for the MARK target by an alias the guest's modprobe cannot resolve). `sch_ingress` (the
/// `clsact` qdisc) and `cls_bpf` take the TC programs of checks through the VIP on this kernel,
/// which has no TCX (6.6).
const BOOT_MODULES: &[&str] = &[
    "crc32c_generic",
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "veth",
    "bridge",
    "ipip",
    "ip6_tunnel",
    "ip_gre",
    "ip6_gre",
    "sit",
    "fou",
    "fou6",
    "ip_tables",
    "iptable_mangle",
    "xt_tcpudp",
    "xt_mark",
    "8021q",
    "sch_ingress",
    "cls_bpf",
];
/// Put into the initramfs with their dependencies; `ip_vs*` means every IPVS module.
const GUEST_MODULES: &[&str] = &[
    "ip_vs*",
    "veth",
    "bridge",
    "crc32c_generic",
    "ipip",
    "ip6_tunnel",
    "ip_gre",
    "ip6_gre",
    "sit",
    "fou",
    "fou6",
    "ip_tables",
    "iptable_mangle",
    "xt_tcpudp",
    "xt_mark",
    "8021q",
    "sch_ingress",
    "cls_bpf",
];
/// The guest's userland besides busybox: `ipvsadm`, iproute2's `ip` (busybox's has no `netns`),
/// `iptables-legacy` (to mark packets for firewall-mark services) and what they link against (`ldd` on a Debian 12 host; the packages' own lists name more, for
/// tools the guest does not carry, see [`skipped`]).
const GUEST_PACKAGES: &[&str] = &[
    "busybox-static",
    "ipvsadm",
    "libc6",
    "libnl-3-200",
    "libnl-genl-3-200",
    "libpopt0",
    "iproute2",
    "libbpf1",
    "libelf1",
    "libmnl0",
    "libbsd0",
    "libcap2",
    "libmd0",
    "zlib1g",
    "iptables",
    "libip4tc2",
    "libip6tc2",
    "libxtables12",
];
/// iproute2's tools besides `ip`, left out of the guest.
const SKIPPED_TOOLS: &[&str] = &[
    "bin/ss",
    "sbin/bridge",
    "sbin/dcb",
    "sbin/devlink",
    "sbin/rtacct",
    "sbin/rtmon",
    "sbin/tc",
    "sbin/tipc",
    "sbin/vdpa",
    "usr/bin/lnstat",
    "usr/bin/nstat",
    "usr/bin/rdma",
    "usr/bin/routel",
    "usr/sbin/arpd",
    "usr/sbin/genl",
    "usr/bin/ctstat",
    "usr/bin/rtstat",
    "usr/lib/x86_64-linux-gnu/tc",
];
/// qemu itself; the libraries it needs that the host lacks are added by asking apt.
const QEMU_PACKAGES: &[&str] =
    &["qemu-system-x86", "qemu-system-common", "qemu-system-data", "seabios"];
/// What the payload's last line on the result port looks like: `@@LB-VM-EXIT 0@@`.
const EXIT_MARKER: &str = "@@LB-VM-EXIT ";

#[derive(Subcommand)]
pub enum Vm {
    /// Download and prepare qemu, the guest kernel and the initramfs under .cache/vm (idempotent).
    Build,
    /// Boot the guest and run a static binary there; exits with the binary's exit code.
    Run {
        /// Seconds before qemu is killed.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// A statically linked x86_64 binary (`-C target-feature=+crt-static`).
        binary: PathBuf,
        /// Its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the guest tests' harness (lb-userspace's `guest` target) statically and run its
    /// ignored tests in the guest.
    Test {
        /// Seconds before qemu is killed.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Run only the in-guest tests whose path contains this (default: all, `vm_`).
        filter: Option<String>,
    },
    /// XDP (generic mode) against kernel IPVS forwarding the same traffic in the guest: medians
    /// and ratios, rows in target/vm-bench.json (see BENCHMARKS.md). Not part of `vm test`.
    Bench {
        /// Seconds before qemu is killed.
        #[arg(long, default_value_t = 1200)]
        timeout: u64,
        /// Rounds, each an IPVS and an XDP phase (alternating which goes first).
        #[arg(long, default_value_t = 9)]
        rounds: u32,
        /// Sequential TCP connections per phase.
        #[arg(long, default_value_t = 1000)]
        tcp: u32,
        /// Sequential UDP requests (a new socket each) per phase.
        #[arg(long, default_value_t = 1000)]
        udp: u32,
        /// Datagrams of the one-flow UDP blast per phase.
        #[arg(long, default_value_t = 50_000)]
        blast: u32,
    },
}

pub fn vm(cmd: Vm) -> anyhow::Result<()> {
    let cache = workspace_root()?.join(".cache").join("vm");
    match cmd {
        Vm::Build => {
            let assets = Assets::ensure(&cache)?;
            println!("vm: assets ready: kernel {}, {}", assets.kernel_version, cache.display());
            Ok(())
        }
        Vm::Run { timeout, binary, args } => {
            let assets = Assets::ensure(&cache)?;
            let outcome =
                boot(&assets, &binary, &args, &Payload::default(), Duration::from_secs(timeout))?;
            eprintln!(
                "vm: exit code {} after {:.2} s in qemu",
                outcome.code,
                outcome.elapsed.as_secs_f64()
            );
            std::process::exit(outcome.code);
        }
        Vm::Test { timeout, filter } => {
            run_tests_in(&cache, filter.as_deref(), Duration::from_secs(timeout)).map(|_| ())
        }
        Vm::Bench { timeout, rounds, tcp, udp, blast } => {
            let counts = [
                ("LB_BENCH_ROUNDS", rounds),
                ("LB_BENCH_TCP", tcp),
                ("LB_BENCH_UDP", udp),
                ("LB_BENCH_BLAST", blast),
            ];
            run_bench(&cache, &counts, Duration::from_secs(timeout))
        }
    }
}

/// What a boot needs, all inside the cache.
pub struct Assets {
    qemu_root: PathBuf,
    vmlinux: PathBuf,
    base_cpio: PathBuf,
    kernel_version: String,
}

impl Assets {
    /// Builds whatever stage is missing; a complete cache costs a few `stat`s.
    pub fn ensure(cache: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
        let qemu_root = stage(cache, "qemu", |dir| build_qemu(cache, dir))?;
        let kernel = stage(cache, "kernel", |dir| build_kernel(cache, dir))?;
        let guest = stage(cache, "guest", |dir| build_guest(cache, dir))?;
        let kernel_version = fs::read_to_string(kernel.join("version"))?.trim().to_owned();
        // Named after what it is made of: checkouts with different recipes can share the cache.
        let base_cpio = cache.join(format!("base-{}.cpio", base_stamp(&kernel_version)));
        if !base_cpio.exists() {
            build_base_cpio(&guest, &kernel, &kernel_version, &base_cpio)?;
            remove_stale_bases(cache, &base_cpio);
        }
        Ok(Assets { qemu_root, vmlinux: kernel.join("vmlinux"), base_cpio, kernel_version })
    }
}

/// The extracted qemu, with its libraries and firmware found in the extraction.
fn qemu_command(root: &Path) -> Command {
    let libs = [root.join("lib/x86_64-linux-gnu"), root.join("usr/lib/x86_64-linux-gnu")];
    let mut cmd = Command::new(root.join("usr/bin/qemu-system-x86_64"));
    cmd.env("LD_LIBRARY_PATH", join_paths(&libs));
    for firmware in ["usr/share/qemu", "usr/share/seabios"] {
        cmd.arg("-L").arg(root.join(firmware));
    }
    cmd
}

/// Runs `build` into a fresh `<name>.tmp` and renames it to `<name>` when it succeeds, so a
/// directory that exists is complete. The recipe number is part of the name.
fn stage(
    cache: &Path,
    name: &str,
    build: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<PathBuf> {
    let dir = cache.join(format!("{name}-r{RECIPE}"));
    if dir.is_dir() {
        return Ok(dir);
    }
    let tmp = cache.join(format!("{name}-r{RECIPE}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    println!("vm: building {name} (once; cached in {})", dir.display());
    let started = Instant::now();
    build(&tmp).with_context(|| format!("building the VM's {name}"))?;
    fs::rename(&tmp, &dir)?;
    println!("vm: {name} ready in {:.1} s", started.elapsed().as_secs_f64());
    Ok(dir)
}

fn join_paths(dirs: &[PathBuf]) -> String {
    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":")
}

/// Output of a command that must succeed.
fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.stderr(Stdio::inherit()).output().with_context(|| format!("starting {cmd:?}"))?;
    ensure!(out.status.success(), "{cmd:?} failed: {}", out.status);
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `apt-get download` into `dir`, refreshing the package lists once if apt does not know a name.
fn download(dir: &Path, packages: &[String]) -> anyhow::Result<()> {
    fs::create_dir_all(dir)?;
    // The cache belongs to root; apt's unprivileged `_apt` user could not write there anyway.
    let attempt = || {
        Command::new("apt-get")
            .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
            .args(packages)
            .current_dir(dir)
            .status()
    };
    if attempt().context("running apt-get download")?.success() {
        return Ok(());
    }
    println!("vm: apt-get download failed; refreshing package lists and retrying");
    run(Command::new("apt-get").args(["update", "-q"]))?;
    ensure!(attempt()?.success(), "apt-get download {} failed", packages.join(" "));
    Ok(())
}

/// Packages `apt-get install` would add for `package` (a dry run: nothing is installed).
fn missing_dependencies(package: &str) -> anyhow::Result<Vec<String>> {
    let simulate = || {
        Command::new("apt-get")
            .args(["-s", "install", "--no-install-recommends", package])
            .env("LC_ALL", "C")
            .output()
    };
    let mut out = simulate().context("running apt-get -s install")?;
    if !out.status.success() {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        out = simulate()?;
        ensure!(out.status.success(), "apt-get -s install {package} failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

fn extract_debs(debs: &Path, into: &Path) -> anyhow::Result<()> {
    let mut found = false;
    for entry in fs::read_dir(debs)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            run(Command::new("dpkg-deb").arg("-x").arg(&path).arg(into))?;
            found = true;
        }
    }
    ensure!(found, "no .deb in {}", debs.display());
    Ok(())
}

fn build_qemu(cache: &Path, dir: &Path) -> anyhow::Result<()> {
    let debs = cache.join("debs").join("qemu");
    let mut packages: BTreeSet<String> = QEMU_PACKAGES.iter().map(|p| p.to_string()).collect();
    packages.extend(missing_dependencies("qemu-system-x86")?);
    download(&debs, &packages.into_iter().collect::<Vec<_>>())?;
    extract_debs(&debs, dir)?;
    let version = output(qemu_command(dir).arg("--version"))
        .context("the extracted qemu does not run (a library missing?)")?;
    println!("vm: {}", version.lines().next().unwrap_or_default());
    Ok(())
}

/// The kernel: an uncompressed `vmlinux` for a direct PVH boot, the module closure with a
/// `modules.dep` of our own (there is no depmod on the host), and its version.
fn build_kernel(cache: &Path, dir: &Path) -> anyhow::Result<()> {
    let depends = output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    let package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .context("apt-cache depends linux-image-amd64 names no kernel package")?
        .to_owned();
    let debs = cache.join("debs").join("kernel");
    if debs.exists() {
        fs::remove_dir_all(&debs)?;
    }
    download(&debs, &[package])?;
    let unpacked = dir.join("unpacked");
    extract_debs(&debs, &unpacked)?;

    let boot = unpacked.join("boot");
    let vmlinuz = fs::read_dir(&boot)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .context("no vmlinuz in the kernel package")?;
    let version = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .context("kernel file name")?
        .to_owned();
    extract_vmlinux(&vmlinuz, &dir.join("vmlinux"))?;

    let src = unpacked.join("lib/modules").join(&version);
    let modules = ModuleIndex::scan(&src)?;
    let closure = modules.closure(GUEST_MODULES)?;
    let dst = dir.join("modules").join("lib/modules").join(&version);
    let mut dep = String::new();
    for name in &closure {
        let rel = &modules.path[name];
        let to = dst.join(rel);
        fs::create_dir_all(to.parent().context("module path")?)?;
        fs::copy(src.join(rel), &to)?;
        let deps: Vec<String> =
            modules.load_order(name).iter().rev().map(|d| modules.path[d].clone()).collect();
        dep.push_str(&format!("{rel}: {}\n", deps.join(" ")).replace(": \n", ":\n"));
    }
    fs::write(dst.join("modules.dep"), dep)?;
    fs::write(dir.join("version"), format!("{version}\n"))?;
    fs::remove_dir_all(&unpacked)?;
    println!("vm: kernel {version}, {} modules", closure.len());
    Ok(())
}

/// Pulls the xz payload out of a bzImage: the kernel boots it directly, skipping the BIOS path
/// and in-guest decompression (both slow under TCG).
fn extract_vmlinux(bzimage: &Path, to: &Path) -> anyhow::Result<()> {
    const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";
    let image = fs::read(bzimage)?;
    let start = image
        .windows(XZ_MAGIC.len())
        .position(|w| w == XZ_MAGIC)
        .context("no xz payload in the bzImage (not CONFIG_KERNEL_XZ?)")?;
    let out = fs::File::create(to)?;
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(out)
        .spawn()
        .context("starting xz")?;
    // xz stops reading at the end of the stream: the bytes after it may meet a closed pipe.
    match child.stdin.take().context("xz stdin")?.write_all(&image[start..]) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    ensure!(child.wait()?.success(), "xz could not decompress the kernel");
    Ok(())
}

/// The modules of a kernel tree by name (`-` and `_` are the same to modprobe).
struct ModuleIndex {
    /// Name to path relative to `lib/modules/<version>`.
    path: BTreeMap<String, String>,
    depends: BTreeMap<String, Vec<String>>,
}

impl ModuleIndex {
    fn scan(root: &Path) -> anyhow::Result<Self> {
        let mut index = ModuleIndex { path: BTreeMap::new(), depends: BTreeMap::new() };
        let mut dirs = vec![root.join("kernel")];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let Some(stem) =
                    path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko"))
                else {
                    continue;
                };
                let name = stem.replace('-', "_");
                let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
                index.depends.insert(name.clone(), modinfo_depends(&fs::read(&path)?));
                index.path.insert(name, rel);
            }
        }
        ensure!(!index.path.is_empty(), "no modules under {} (compressed .ko?)", root.display());
        Ok(index)
    }

    /// `wanted` and everything they depend on; a trailing `*` matches a name prefix.
    fn closure(&self, wanted: &[&str]) -> anyhow::Result<BTreeSet<String>> {
        let mut todo = Vec::new();
        for w in wanted {
            let before = todo.len();
            match w.strip_suffix('*') {
                Some(prefix) => {
                    todo.extend(self.path.keys().filter(|n| n.starts_with(prefix)).cloned())
                }
                None if self.path.contains_key(*w) => todo.push(w.to_string()),
                None => {}
            }
            ensure!(todo.len() > before, "the guest kernel has no module {w}");
        }
        let mut out = BTreeSet::new();
        while let Some(name) = todo.pop() {
            if out.insert(name.clone()) {
                let deps =
                    self.depends.get(&name).with_context(|| format!("unknown module {name}"))?;
                todo.extend(deps.iter().cloned());
            }
        }
        Ok(out)
    }

    /// `name`'s dependencies, each after its own (deepest first), without `name` itself.
    fn load_order(&self, name: &str) -> Vec<String> {
        fn visit(index: &ModuleIndex, name: &str, out: &mut Vec<String>) {
            for dep in index.depends.get(name).into_iter().flatten() {
                visit(index, dep, out);
                if !out.contains(dep) {
                    out.push(dep.clone());
                }
            }
        }
        let mut out = Vec::new();
        visit(self, name, &mut out);
        out
    }
}

/// The `depends=` entry of a module's `.modinfo` section.
fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = ko.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let value = &ko[at + KEY.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace('-', "_"))
        .collect()
}

fn build_guest(cache: &Path, dir: &Path) -> anyhow::Result<()> {
    let debs = cache.join("debs").join("guest");
    if debs.exists() {
        fs::remove_dir_all(&debs)?;
    }
    download(&debs, &GUEST_PACKAGES.iter().map(|p| p.to_string()).collect::<Vec<_>>())?;
    extract_debs(&debs, dir)?;
    ensure!(dir.join("bin/busybox").exists(), "busybox-static has no bin/busybox");
    Ok(())
}

/// The base initramfs's name: what it is made of, so edits rebuild it.
fn base_stamp(kernel_version: &str) -> String {
    let mut h = std::hash::DefaultHasher::new();
    (RECIPE, INIT, BOOT_MODULES, SKIPPED_TOOLS, kernel_version).hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Removes other base initramfs files not written for a day (a boot reads its base at once, so
/// an old one is in nobody's way).
fn remove_stale_bases(cache: &Path, keep: &Path) {
    let Ok(entries) = fs::read_dir(cache) else { return };
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let base =
            name.starts_with("base") && (name.ends_with(".cpio") || name.ends_with(".stamp"));
        let old = fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(86_400)));
        if base && old && path != keep {
            let _ = fs::remove_file(&path);
        }
    }
}

/// Parts of the guest packages the guest never reads: documentation, locales, charset converters.
fn skipped(rel: &Path) -> bool {
    let s = rel.to_string_lossy();
    s.starts_with("usr/share")
        || s.contains("/gconv")
        || s.starts_with("etc/init.d")
        || SKIPPED_TOOLS.iter().any(|t| s == *t)
}

fn build_base_cpio(guest: &Path, kernel: &Path, version: &str, to: &Path) -> anyhow::Result<()> {
    let mut cpio = Cpio::default();
    for d in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "run",
        "root",
    ] {
        cpio.dir(d, 0o755);
    }
    cpio.tree(guest, guest, &skipped)?;
    // Busybox applets where the packages put nothing of their own (ipvsadm stays ipvsadm).
    let applets = output(Command::new(guest.join("bin/busybox")).arg("--list"))?;
    for applet in applets.lines().filter(|a| *a != "busybox") {
        if !["bin", "sbin", "usr/bin", "usr/sbin"]
            .iter()
            .any(|d| guest.join(d).join(applet).exists())
        {
            cpio.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    let modules = kernel.join("modules");
    cpio.tree(&modules, &modules, &|_| false)?;
    cpio.file("etc/vm-modules", 0o644, format!("{}\n", BOOT_MODULES.join("\n")).as_bytes());
    cpio.file("init", 0o755, INIT.as_bytes());
    let bytes = cpio.finish();
    let tmp = to.with_extension(format!("{}.tmp", std::process::id()));
    fs::write(&tmp, &bytes)?;
    fs::rename(&tmp, to)?;
    println!("vm: initramfs for {version}: {:.1} MiB", bytes.len() as f64 / (1 << 20) as f64);
    Ok(())
}

/// A `newc` cpio archive written in memory. Every entry is padded to 4 bytes and so is the end,
/// which is what lets a second archive be appended for the kernel to find.
#[derive(Default)]
struct Cpio {
    buf: Vec<u8>,
    ino: u32,
    seen: BTreeSet<String>,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        if !self.seen.insert(name.to_owned()) && name != "TRAILER!!!" {
            return;
        }
        self.ino += 1;
        let fields =
            [self.ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn dir(&mut self, name: &str, perm: u32) {
        self.entry(name, 0o040000 | perm, &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, data);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, target.as_bytes());
    }

    /// Everything under `dir`, named relative to `root`, parents before children.
    fn tree(
        &mut self,
        root: &Path,
        dir: &Path,
        skip: &dyn Fn(&Path) -> bool,
    ) -> anyhow::Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let rel = path.strip_prefix(root)?;
            if skip(rel) {
                continue;
            }
            let name = rel.to_string_lossy();
            let meta = fs::symlink_metadata(&path)?;
            let perm = meta.mode() & 0o7777;
            if meta.file_type().is_symlink() {
                self.symlink(&name, &fs::read_link(&path)?.to_string_lossy());
            } else if meta.is_dir() {
                self.dir(&name, perm);
                self.tree(root, &path, skip)?;
            } else {
                self.file(&name, perm, &fs::read(&path)?);
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        // A block boundary, like cpio(1) writes; also keeps any appended archive aligned.
        while !self.buf.len().is_multiple_of(512) {
            self.buf.push(0);
        }
        self.buf
    }
}

/// Quotes for `sh`: inside single quotes everything is literal except `'` itself.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// How a payload ended.
pub struct Outcome {
    pub code: i32,
    /// Its stdout and stderr, interleaved as written (already echoed to stdout while it ran).
    pub output: String,
    /// From qemu's start to its exit.
    pub elapsed: Duration,
}

/// What a boot runs besides the base initramfs.
#[derive(Default)]
pub struct Payload<'a> {
    /// More static binaries: (path in the guest without the leading `/`, path on the host).
    pub files: Vec<(&'a str, &'a Path)>,
    /// Environment of the payload binary.
    pub env: Vec<(&'a str, &'a str)>,
}

fn read_elf(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(bytes.starts_with(b"\x7fELF"), "{} is not an ELF binary", path.display());
    Ok(bytes)
}

/// Boots the guest with `binary` in `/payload/` and waits for its end marker.
pub fn boot(
    assets: &Assets,
    binary: &Path,
    args: &[String],
    more: &Payload<'_>,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let payload = read_elf(binary)?;
    // Under its own file name, so argv[0] stays meaningful (busybox and test harnesses use it).
    let name = binary.file_name().and_then(|n| n.to_str()).unwrap_or("payload");
    let mut script = String::new();
    for (key, value) in &more.env {
        script.push_str(&format!("export {key}={}\n", sh_quote(value)));
    }
    script.push_str(&format!("exec {}", sh_quote(&format!("/payload/{name}"))));
    for a in args {
        script.push(' ');
        script.push_str(&sh_quote(a));
    }
    script.push('\n');
    let mut extra = Cpio::default();
    extra.dir("payload", 0o755);
    extra.file(&format!("payload/{name}"), 0o755, &payload);
    for (guest, host) in &more.files {
        extra.file(guest, 0o755, &read_elf(host)?);
    }
    extra.file("payload.sh", 0o644, script.as_bytes());

    let runs = assets.base_cpio.with_file_name("runs");
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let dir = runs.join(format!("{}-{nanos}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let initrd = dir.join("initrd");
    let mut image = fs::read(&assets.base_cpio)?;
    image.extend_from_slice(&extra.finish());
    fs::write(&initrd, image)?;
    let (console, result) = (dir.join("console"), dir.join("result"));

    let mut cmd = qemu_command(&assets.qemu_root);
    cmd.args(["-accel", "tcg", "-m", "512", "-nodefaults", "-no-user-config", "-display", "none"])
        .arg("-no-reboot")
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", result.display()))
        .arg("-kernel")
        .arg(&assets.vmlinux)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null());
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting qemu")?;
    let mut live = LiveOutput::default();
    let status = loop {
        live.poll(&result);
        if let Some(status) = child.try_wait()? {
            live.poll(&result);
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let _ = fs::remove_file(&initrd);
            bail!(
                "the VM did not finish within {} s; console: {}\n{}",
                timeout.as_secs(),
                console.display(),
                tail(&console)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    // The initrd is the big part; console and result stay on failure for diagnosis.
    fs::remove_file(&initrd)?;
    ensure!(status.success(), "qemu failed ({status}); console:\n{}", tail(&console));
    let text = String::from_utf8_lossy(&fs::read(&result).unwrap_or_default()).into_owned();
    let Some(at) = text.rfind(EXIT_MARKER) else {
        bail!(
            "the guest powered off without an exit marker; output:\n{text}\nconsole ({}):\n{}",
            console.display(),
            tail(&console)
        );
    };
    let code = text[at + EXIT_MARKER.len()..]
        .split("@@")
        .next()
        .and_then(|c| c.trim().parse().ok())
        .context("unreadable exit marker")?;
    let output = text[..at].replace("\r\n", "\n");
    fs::remove_dir_all(&dir)?;
    Ok(Outcome { code, output, elapsed })
}

/// Echoes the result port's complete lines to stdout while the guest runs, so a long in-guest
/// test shows progress; the exit marker is not echoed.
#[derive(Default)]
struct LiveOutput {
    printed: usize,
}

impl LiveOutput {
    fn poll(&mut self, result: &Path) {
        let Ok(bytes) = fs::read(result) else { return };
        let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else { return };
        if end < self.printed {
            return;
        }
        let text = String::from_utf8_lossy(&bytes[self.printed..=end]);
        let mut stdout = std::io::stdout().lock();
        // Serial ports turn "\n" into "\r\n".
        for line in text.split_inclusive('\n') {
            let line = line.replace("\r\n", "\n");
            let line = match line.find(EXIT_MARKER) {
                Some(0) => continue,
                // Output without a final newline, then the marker.
                Some(at) => format!("{}\n", &line[..at]),
                None => line,
            };
            let _ = stdout.write_all(line.as_bytes());
        }
        let _ = stdout.flush();
        self.printed = end + 1;
    }
}

fn tail(path: &Path) -> String {
    let text = String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Where the static guest builds go: `$LB_VM_TARGET_DIR`, else `vm/` in the target directory (their own target
/// dir, so the normal build cache is untouched).
fn static_target_dir(root: &Path) -> PathBuf {
    std::env::var_os("LB_VM_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::target_dir(root).join("vm"))
}

/// The static binaries an in-guest test run needs.
struct StaticBuild {
    /// The guest tests' harness (lb-userspace's `guest` test target).
    harness: PathBuf,
    /// The `lb` binary, `/bin/lb` there: without its BPF object for the tests (they drive IPVS),
    /// with it for the benchmark.
    lb: PathBuf,
}

/// Where the guest finds the `lb` binary; the tests read it from `$LB_BIN`, like on the host.
const GUEST_LB: &str = "bin/lb";

/// Which `lb` goes into the guest.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lb {
    /// Without its BPF object (`AYA_BUILD_SKIP=1`): the test harness, which drives IPVS.
    IpvsOnly,
    /// With the XDP program: the `lb` of `vm test` and `vm bench`.
    WithXdp,
}

fn build_static(root: &Path, lb: Lb) -> anyhow::Result<StaticBuild> {
    let dir = static_target_dir(root);
    let harness = static_executable(
        root,
        &dir,
        Lb::IpvsOnly,
        &["test", "-p", "lb-userspace", "--test", "guest", "--no-run"],
        "guest",
        r#""test":true"#,
    )
    .context("building the static test harness")?;
    // Built with the BPF object in a target dir of its own: in the same one, switching
    // AYA_BUILD_SKIP would rebuild lb-userspace on every alternation of `vm test` and `vm bench`.
    let lb_dir = match lb {
        Lb::IpvsOnly => dir,
        Lb::WithXdp => dir.join("xdp"),
    };
    let lb = static_executable(
        root,
        &lb_dir,
        lb,
        &["build", "-p", "lb-userspace", "--bin", "lb"],
        "lb",
        r#""test":false"#,
    )
    .context("building the static lb binary")?;
    Ok(StaticBuild { harness, lb })
}

/// Runs `cargo ARGS` for a static x86_64 build in `target_dir` and returns the path of the
/// executable of target `name` whose artifact line contains `filter`.
fn static_executable(
    root: &Path,
    target_dir: &Path,
    lb: Lb,
    args: &[&str],
    name: &str,
    filter: &str,
) -> anyhow::Result<PathBuf> {
    let target = "x86_64-unknown-linux-gnu";
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .args(args)
        // JSON artifacts on stdout, compiler errors rendered on stderr (plain `json` hid them).
        .args(["--message-format=json-render-diagnostics", "--target", target])
        .env("CARGO_TARGET_DIR", target_dir)
        // With --target, these flags reach only target code, not build scripts or proc macros
        // (nor the nested eBPF build, which aya-build gives CARGO_ENCODED_RUSTFLAGS of its own).
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_PROFILE_DEV_DEBUG", "false");
    match lb {
        Lb::IpvsOnly => cmd.env("AYA_BUILD_SKIP", "1"),
        Lb::WithXdp => cmd.env_remove("AYA_BUILD_SKIP"),
    };
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting cargo {}", args.join(" ")))?;
    ensure!(out.status.success(), "cargo {} failed", args.join(" "));
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter(|l| l.contains(r#""reason":"compiler-artifact""#) && l.contains(filter))
        .filter(|l| l.contains(&format!(r#""name":"{name}""#)))
        .find_map(|l| l.split(r#""executable":""#).nth(1)?.split('"').next().map(PathBuf::from))
        .with_context(|| format!("cargo {} reported no {name} executable", args.join(" ")))
}

/// Runs the in-guest tests (for `cargo xtask test`): (passed, failed), failing when any failed.
pub fn run_tests(timeout: Duration) -> anyhow::Result<(u64, u64)> {
    run_tests_in(&workspace_root()?.join(".cache").join("vm"), None, timeout)
}

fn run_tests_in(
    cache: &Path,
    filter: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<(u64, u64)> {
    let root = workspace_root()?;
    let assets = Assets::ensure(cache)?;
    let started = Instant::now();
    // With the XDP program: the VLAN test runs it (the others ask for IPVS, or get it for what
    // XDP cannot do); `vm bench` uses the same build.
    let build = build_static(&root, Lb::WithXdp)?;
    println!(
        "vm: static harness and lb built in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        build.harness.display()
    );
    let mut args: Vec<String> =
        [filter.unwrap_or("vm_"), "--ignored", "--test-threads=1", "--nocapture"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    // The benchmark is `vm bench`'s (and needs an lb with its XDP program).
    if !filter.is_some_and(|f| f.contains(BENCH_TESTS)) {
        args.extend(["--skip".to_owned(), BENCH_TESTS.to_owned()]);
    }
    let lb_path = format!("/{GUEST_LB}");
    let more = Payload { files: vec![(GUEST_LB, &build.lb)], env: vec![("LB_BIN", &lb_path)] };
    let outcome = boot(&assets, &build.harness, &args, &more, timeout)?;
    let (mut passed, mut failed) = (0, 0);
    for line in outcome.output.lines() {
        if let Some(summary) = line.strip_prefix("test result: ") {
            for part in summary.split(';') {
                let part = part.trim().trim_start_matches("ok. ").trim_start_matches("FAILED. ");
                if let Some(n) = part.strip_suffix(" passed") {
                    passed += n.trim().parse::<u64>().unwrap_or(0);
                } else if let Some(n) = part.strip_suffix(" failed") {
                    failed += n.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    println!(
        "vm test: {passed} passed, {failed} failed (guest exit {}, {:.2} s in qemu, kernel {})",
        outcome.code,
        outcome.elapsed.as_secs_f64(),
        assets.kernel_version
    );
    ensure!(outcome.code == 0 && failed == 0, "in-guest tests failed");
    ensure!(passed > 0, "no in-guest test ran");
    Ok((passed, failed))
}

/// The in-guest benchmark's tests (`lb-userspace/tests/guest/vm_bench.rs`).
const BENCH_TESTS: &str = "vm_bench::";
/// How the benchmark hands a result row to the host: `@@BENCH {"name",...}` on a line.
const BENCH_ROW: &str = "@@BENCH ";

/// `cargo xtask vm bench`: the in-guest benchmark with an XDP-capable `lb`; its rows (JSON
/// objects, one per line of its output) go to `target/vm-bench.json`.
fn run_bench(cache: &Path, counts: &[(&str, u32)], timeout: Duration) -> anyhow::Result<()> {
    let root = workspace_root()?;
    let assets = Assets::ensure(cache)?;
    let started = Instant::now();
    let build = build_static(&root, Lb::WithXdp)?;
    println!(
        "vm: static harness and XDP-capable lb built in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        build.lb.display()
    );
    let args: Vec<String> = [BENCH_TESTS, "--ignored", "--test-threads=1", "--nocapture"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let lb_path = format!("/{GUEST_LB}");
    let values: Vec<(&str, String)> = counts.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let mut env = vec![("LB_BIN", lb_path.as_str())];
    env.extend(values.iter().map(|(k, v)| (*k, v.as_str())));
    let more = Payload { files: vec![(GUEST_LB, &build.lb)], env };
    let outcome = boot(&assets, &build.harness, &args, &more, timeout)?;
    ensure!(outcome.code == 0, "the in-guest benchmark failed (exit {})", outcome.code);
    let rows: Vec<&str> =
        outcome.output.lines().filter_map(|l| l.trim().strip_prefix(BENCH_ROW)).collect();
    ensure!(!rows.is_empty(), "the in-guest benchmark reported no rows");
    let json = crate::target_dir(&root).join("vm-bench.json");
    fs::create_dir_all(json.parent().context("target dir")?)?;
    fs::write(&json, format!("[\n  {}\n]\n", rows.join(",\n  ")))
        .with_context(|| format!("writing {}", json.display()))?;
    println!(
        "vm bench: {} rows written to {} ({:.0} s in qemu, kernel {})",
        rows.len(),
        json.display(),
        outcome.elapsed.as_secs_f64(),
        assets.kernel_version
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_and_end_are_aligned() {
        let mut c = Cpio::default();
        c.dir("bin", 0o755);
        c.file("bin/x", 0o755, b"abc");
        c.symlink("bin/sh", "busybox");
        let bytes = c.finish();
        assert_eq!(bytes.len() % 512, 0);
        assert!(bytes.starts_with(b"070701"));
        // Header (110) + "bin\0" (4) = 114, padded to 116: the next header starts there.
        assert_eq!(&bytes[116..122], b"070701");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("TRAILER!!!"));
    }

    #[test]
    fn modinfo_depends_reads_the_list() {
        let ko = b"junk\0license=GPL\0depends=nf_conntrack,libcrc32c,nf-defrag-ipv6\0intree=Y\0";
        assert_eq!(modinfo_depends(ko), vec!["nf_conntrack", "libcrc32c", "nf_defrag_ipv6"]);
        assert!(modinfo_depends(b"\0depends=\0").is_empty());
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
