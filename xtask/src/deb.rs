//! `cargo xtask deb`: the Debian package, `target/debian/lb_<version>_amd64.deb`, staged here and
//! built with `dpkg-deb` (no other tool to install). `--check` (and `cargo xtask test`) installs it
//! into a clean Debian bookworm root made by mmdebstrap and checks what an operator relies on.
//!
//! Paths are chosen clear of other Debian packages: live-build owns `/usr/bin/lb` and `lb(1)`, so
//! the binary is `/usr/sbin/lb` and its man pages are in section 8.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{run, target_dir, workspace_root};

const PACKAGE: &str = "lb";
const VERSION: &str = env!("CARGO_PKG_VERSION");
const ARCH: &str = "amd64";
const UNIT_DIR: &str = "lib/systemd/system";
const CONFFILE: &str = "etc/lb/lb.toml";

/// Which `lb` goes into the package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// `cargo build --release` (the default: what operators install).
    Release,
    /// The debug build CI already has: packaging is then seconds, not minutes.
    Debug,
}

/// `cargo xtask deb`: builds lb, then the package; with `check`, installs and checks it.
pub fn deb(profile: Profile, check: bool) -> anyhow::Result<()> {
    let root = workspace_root()?;
    let mut build = Command::new("cargo");
    build.current_dir(&root).args(["build", "-p", "lb-userspace", "--bin", "lb"]);
    if profile == Profile::Release {
        build.arg("--release");
    }
    run(&mut build)?;
    let dir = if profile == Profile::Release { "release" } else { "debug" };
    let deb = package(&root, &target_dir(&root).join(dir).join("lb"), profile)?;
    println!("{}", deb.display());
    if check {
        let (_, failed) = verify(&root, &deb)?;
        if failed > 0 {
            bail!("{failed} package check(s) failed");
        }
    }
    Ok(())
}

/// The `cargo xtask test` step: packages the debug `lb` already built and checks the package in a
/// bookworm root. Returns (passed, failed) checks.
pub fn ci(root: &Path, lb: &Path) -> anyhow::Result<(u64, u64)> {
    let started = Instant::now();
    let deb = package(root, lb, Profile::Debug)?;
    let counts = verify(root, &deb)?;
    eprintln!("xtask: package checks took {:.0} s", started.elapsed().as_secs_f64());
    Ok(counts)
}

/// Stages the package tree under `target/debian/` and builds the .deb from it.
pub fn package(root: &Path, lb: &Path, profile: Profile) -> anyhow::Result<PathBuf> {
    let out_dir = target_dir(root).join("debian");
    let stage = out_dir.join(format!("{PACKAGE}_{VERSION}_{ARCH}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    let put = |rel: &str, data: &[u8], mode: u32| -> anyhow::Result<()> {
        let path = stage.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        Ok(())
    };

    // The binary (the XDP object is inside it), without debug info.
    let sbin = stage.join("usr/sbin/lb");
    fs::create_dir_all(sbin.parent().context("usr/sbin")?)?;
    run(Command::new("objcopy").arg("--strip-debug").arg(lb).arg(&sbin))
        .context("objcopy (binutils) strips the binary")?;
    fs::set_permissions(&sbin, fs::Permissions::from_mode(0o755))?;

    let contrib = root.join("contrib");
    let unit = fs::read_to_string(contrib.join("lb.service"))?;
    put(&format!("{UNIT_DIR}/lb.service"), packaged_unit(&unit).as_bytes(), 0o644)?;
    put("usr/lib/sysusers.d/lb.conf", SYSUSERS.as_bytes(), 0o644)?;
    put(CONFFILE, &fs::read(contrib.join("lb.toml"))?, 0o644)?;

    // Man pages and completions come from the binary's own clap definition.
    let man_dir = out_dir.join("man");
    if man_dir.exists() {
        fs::remove_dir_all(&man_dir)?;
    }
    let listed = output(Command::new(&sbin).arg("man").arg("--dir").arg(&man_dir))?;
    for page in listed.lines().map(Path::new) {
        let name = page.file_name().and_then(|n| n.to_str()).context("man page name")?;
        let section = name.rsplit('.').next().context("man page section")?;
        put(&format!("usr/share/man/man{section}/{name}.gz"), &gzip(&fs::read(page)?)?, 0o644)?;
    }
    let completions = [
        ("bash", "usr/share/bash-completion/completions/lb"),
        ("zsh", "usr/share/zsh/vendor-completions/_lb"),
        ("fish", "usr/share/fish/vendor_completions.d/lb.fish"),
    ];
    for (shell, rel) in completions {
        put(rel, output(Command::new(&sbin).args(["completions", shell]))?.as_bytes(), 0o644)?;
    }

    let commit = output(Command::new(&sbin).arg("--version"))?;
    let doc = "usr/share/doc/lb";
    put(&format!("{doc}/copyright"), copyright(root)?.as_bytes(), 0o644)?;
    put(
        &format!("{doc}/changelog.Debian.gz"),
        &gzip(changelog(root, commit.trim())?.as_bytes())?,
        0o644,
    )?;

    // Control area.
    let files = walk(&stage)?;
    let mut md5sums = String::new();
    let mut size = 0;
    for rel in &files {
        let path = stage.join(rel);
        size += fs::metadata(&path)?.len();
        let sum = output(Command::new("md5sum").arg(&path))?;
        let hash = sum.split_whitespace().next().context("md5sum output")?;
        writeln!(md5sums, "{hash}  {rel}")?;
    }
    let depends = depends(&sbin)?;
    put("DEBIAN/control", control(size.div_ceil(1024), &depends).as_bytes(), 0o644)?;
    put("DEBIAN/md5sums", md5sums.as_bytes(), 0o644)?;
    put("DEBIAN/conffiles", format!("/{CONFFILE}\n").as_bytes(), 0o644)?;
    put("DEBIAN/postinst", POSTINST.as_bytes(), 0o755)?;
    put("DEBIAN/prerm", PRERM.as_bytes(), 0o755)?;
    put("DEBIAN/postrm", POSTRM.as_bytes(), 0o755)?;
    // Directories 0755 whatever the umask.
    for dir in dirs(&stage)? {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    }

    let deb = out_dir.join(format!("{PACKAGE}_{VERSION}_{ARCH}.deb"));
    // xz for what operators download; gzip (4x less CPU) for the checks of the debug build.
    let compression = if profile == Profile::Release { "-Zxz" } else { "-Zgzip" };
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", compression, "--build"])
        .arg(&stage)
        .arg(&deb))?;
    Ok(deb)
}

/// The unit as installed: the packaged binary's path, without the manual install notes.
fn packaged_unit(unit: &str) -> String {
    let body = unit.lines().skip_while(|l| l.starts_with('#')).collect::<Vec<_>>().join("\n");
    format!(
        "# systemd unit of the lb director (Debian package). `systemctl reload lb` re-reads\n\
         # /etc/lb/lb.toml (SIGHUP).\n{}\n",
        body.replace("/usr/local/bin/lb", "/usr/sbin/lb")
    )
}

/// The unit's `User=`/`Group=` (contrib/lb.service): a system user without a home or a shell.
const SYSUSERS: &str = "# The lb director's system user (lb.service runs as it).\n\
                        u lb - \"lb load balancer director\" /nonexistent /usr/sbin/nologin\n";

/// Creates the user; the unit is not enabled: as shipped, the config has nothing to do, and a
/// director should start only once its operator has written one.
const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if command -v systemd-sysusers >/dev/null 2>&1; then
        systemd-sysusers lb.conf
    elif ! getent passwd lb >/dev/null; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin lb
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        # An upgrade restarts a running director (hitless: its maps and links are pinned).
        if systemctl is-active --quiet lb.service; then
            systemctl restart lb.service || true
        fi
    fi
fi
exit 0
"#;

const PRERM: &str = r#"#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop lb.service || true
fi
exit 0
"#;

/// dpkg itself removes the conffile (and the emptied /etc/lb) on purge; the user stays, as
/// Debian keeps system users (files may still belong to it).
const POSTRM: &str = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
"#;

fn control(installed_kib: u64, depends: &str) -> String {
    format!(
        "Package: {PACKAGE}\n\
         Version: {VERSION}\n\
         Architecture: {ARCH}\n\
         Maintainer: lb maintainers <lb@example.org>\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}\n\
         Recommends: systemd\n\
         Section: net\n\
         Priority: optional\n\
         Description: eBPF/XDP direct-routing load balancer director\n \
         lb forwards the packets of virtual services to real servers by direct routing,\n \
         in an XDP program (weighted Maglev), or through kernel IPVS for NAT, tunnels and\n \
         connection-counting schedulers. It reads its own TOML configuration or\n \
         keepalived.conf, checks the real servers, and fails over between directors\n \
         with VRRP.\n"
    )
}

/// `Depends:` from the binary's dynamic section: its libraries' packages, libc6 at least at the
/// newest glibc symbol version it uses.
fn depends(bin: &Path) -> anyhow::Result<String> {
    let dynamic = output(Command::new("objdump").arg("-p").arg(bin))?;
    let symbols = output(Command::new("objdump").arg("-T").arg(bin))?;
    depends_from(&dynamic, &symbols)
}

fn depends_from(dynamic: &str, symbols: &str) -> anyhow::Result<String> {
    let glibc = symbols
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let parts: Option<Vec<u32>> = v.split('.').map(|p| p.parse().ok()).collect();
            parts
        })
        .max()
        .context("no glibc symbol versions in the binary")?;
    let glibc = glibc.iter().map(u32::to_string).collect::<Vec<_>>().join(".");
    let mut packages = BTreeSet::new();
    for lib in dynamic.lines().filter_map(|l| l.trim().strip_prefix("NEEDED")).map(str::trim) {
        match lib {
            "libc.so.6"
            | "libm.so.6"
            | "ld-linux-x86-64.so.2"
            | "libpthread.so.0"
            | "libdl.so.2"
            | "librt.so.1" => packages.insert(format!("libc6 (>= {glibc})")),
            "libgcc_s.so.1" => packages.insert("libgcc-s1 (>= 4.2)".to_owned()),
            other => bail!("the binary needs {other}: name its Debian package in xtask/src/deb.rs"),
        };
    }
    // The unit's ExecReload runs /bin/kill (procps), which minimal systems lack.
    packages.insert("procps".to_owned());
    Ok(packages.into_iter().collect::<Vec<_>>().join(", "))
}

/// Machine-readable copyright: the license texts of the repository (LICENSE-MIT, LICENSE-APACHE).
fn copyright(root: &Path) -> anyhow::Result<String> {
    let mit = fs::read_to_string(root.join("LICENSE-MIT")).context("LICENSE-MIT")?;
    // Debian ships the Apache text; the file in the repository is the same license.
    fs::metadata(root.join("LICENSE-APACHE")).context("LICENSE-APACHE")?;
    let mit_body: String = mit
        .lines()
        .skip_while(|l| !l.starts_with("Permission"))
        .map(|l| if l.is_empty() { " .\n".to_owned() } else { format!(" {l}\n") })
        .collect();
    Ok(format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: lb\n\n\
         Files: *\n\
         Copyright: The lb authors\n\
         License: MIT or Apache-2.0\n\n\
         License: MIT\n{mit_body}\n\
         License: Apache-2.0\n \
         On Debian systems, the complete text of the Apache License, Version 2.0, is in\n \
         /usr/share/common-licenses/Apache-2.0.\n"
    ))
}

/// One entry: this version, built from this commit, dated by the commit (reproducible).
fn changelog(root: &Path, version_line: &str) -> anyhow::Result<String> {
    let date = output(Command::new("git").current_dir(root).args(["log", "-1", "--format=%aD"]))
        .map(|d| d.trim().to_owned())
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".to_owned());
    Ok(format!(
        "{PACKAGE} ({VERSION}) unstable; urgency=medium\n\n  \
         * Package of {version_line}.\n\n \
         -- lb maintainers <lb@example.org>  {date}\n"
    ))
}

fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting gzip")?;
    child.stdin.take().context("gzip stdin")?.write_all(data)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("gzip failed: {}", out.status);
    }
    Ok(out.stdout)
}

/// Files under `dir` (relative, sorted), the control area left out.
fn walk(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                if path != dir.join("DEBIAN") {
                    todo.push(path);
                }
            } else if let Ok(rel) = path.strip_prefix(dir) {
                files.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    Ok(files)
}

fn dirs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = vec![dir.to_path_buf()];
    let mut i = 0;
    while let Some(d) = found.get(i).cloned() {
        for entry in fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                found.push(path);
            }
        }
        i += 1;
    }
    Ok(found)
}

/// Runs a command and returns its stdout; a failure carries its stderr.
fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------------------------------------
// Checking the package in a clean Debian root.

/// What the clean root has besides minbase: systemd (sysusers, systemd-analyze), man, and what
/// the package depends on beyond minbase (dpkg -i installs no dependencies).
const ROOT_PACKAGES: &str = "systemd,man-db,procps";

/// Installs `deb` into a fresh bookworm root and checks it; prints one line per check.
pub fn verify(root: &Path, deb: &Path) -> anyhow::Result<(u64, u64)> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("the package checks need root (chroot, dpkg in a Debian root)");
    }
    let cache = root.join(".cache").join("deb");
    fs::create_dir_all(&cache)?;
    let tarball = bookworm_root(&cache)?;
    let live_build = live_build_deb(&cache)?;
    let chroot = Chroot::unpack(&tarball, &target_dir(root).join("debian"))?;
    fs::copy(deb, chroot.path("tmp/lb.deb"))?;
    fs::copy(&live_build, chroot.path("tmp/live-build.deb"))?;

    let mut results: Vec<(&str, anyhow::Result<()>)> = Vec::new();
    results.push(("no file of live-build in the package", no_shared_files(deb, &live_build)));
    let installed = chroot.run(&["dpkg", "-i", "/tmp/lb.deb"]).map(drop);
    let ok = installed.is_ok();
    results.push(("dpkg -i into a clean bookworm root", installed));
    if ok {
        results.push(("files in place", files_in_place(&chroot)));
        results.push(("lb --version names the commit", version(&chroot)));
        results
            .push(("the lb system user exists", chroot.run(&["getent", "passwd", "lb"]).map(drop)));
        results.push((
            "lb check of /etc/lb/lb.toml",
            chroot.run(&["/usr/sbin/lb", "check", "-c", "/etc/lb/lb.toml"]).map(drop),
        ));
        results.push(("systemd-analyze verify lb.service", verify_unit(&chroot)));
        results.push(("man -l renders every page", man_pages(&chroot)));
        results.push(("live-build installs beside it", beside_live_build(&chroot)));
        results.push(("remove keeps /etc/lb/lb.toml, purge removes it", remove_purge(&chroot)));
    }
    let (mut passed, mut failed) = (0, 0);
    for (name, result) in &results {
        match result {
            Ok(()) => {
                passed += 1;
                println!("deb: ok: {name}");
            }
            Err(e) => {
                failed += 1;
                println!("deb: FAILED: {name}: {e:#}");
            }
        }
    }
    Ok((passed, failed))
}

/// A clean bookworm root (minbase + ROOT_PACKAGES) from the machine's apt sources, cached as a
/// tarball per package list (a repeated run unpacks it in seconds).
fn bookworm_root(cache: &Path) -> anyhow::Result<PathBuf> {
    let key: u32 = ROOT_PACKAGES.bytes().fold(0, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    let tarball = cache.join(format!("bookworm-minbase-{key:08x}.tar"));
    if tarball.exists() {
        return Ok(tarball);
    }
    eprintln!("xtask: creating a bookworm root with mmdebstrap (about 2 minutes, once)");
    // Written aside and renamed: other worktrees share the cache.
    let partial = cache.join(format!("bookworm-minbase-{key:08x}.{}.tar", std::process::id()));
    run(Command::new("mmdebstrap")
        .args(["--variant=minbase", "--quiet", &format!("--include={ROOT_PACKAGES}"), "bookworm"])
        .arg(&partial)
        .args(apt_sources(Path::new("/etc/apt"))?)
        .stdin(std::process::Stdio::null()))
    .context("mmdebstrap (cargo xtask bootstrap installs it)")?;
    fs::rename(&partial, &tarball)?;
    Ok(tarball)
}

/// The machine's own apt source files for bookworm (mmdebstrap pastes a file given as a mirror
/// into the root's sources); none: mmdebstrap's default mirror.
fn apt_sources(etc_apt: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = vec![etc_apt.join("sources.list")];
    if let Ok(dir) = fs::read_dir(etc_apt.join("sources.list.d")) {
        let mut listed: Vec<PathBuf> = dir.filter_map(Result::ok).map(|e| e.path()).collect();
        listed.sort();
        files.extend(listed);
    }
    let is_source = |p: &PathBuf| {
        p.extension().is_some_and(|e| e == "list" || e == "sources")
            && fs::read_to_string(p).is_ok_and(|text| {
                text.lines().any(|l| !l.trim_start().starts_with('#') && l.contains("bookworm"))
            })
    };
    Ok(files.into_iter().filter(is_source).collect())
}

/// Debian's live-build package, whose `lb` ours must not collide with.
fn live_build_deb(cache: &Path) -> anyhow::Result<PathBuf> {
    let found = |dir: &Path| -> anyhow::Result<Option<PathBuf>> {
        Ok(fs::read_dir(dir)?.filter_map(Result::ok).map(|e| e.path()).find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("live-build_") && n.ends_with(".deb"))
        }))
    };
    if let Some(deb) = found(cache)? {
        return Ok(deb);
    }
    run(Command::new("apt-get").current_dir(cache).args(["download", "-q", "live-build"]))?;
    found(cache)?.context("apt-get download live-build left no .deb")
}

/// A Debian root unpacked into a temporary directory, removed on drop.
struct Chroot {
    dir: PathBuf,
}

impl Chroot {
    fn unpack(tarball: &Path, parent: &Path) -> anyhow::Result<Self> {
        let dir = parent.join(format!("root-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        let chroot = Chroot { dir };
        run(Command::new("tar").arg("-xf").arg(tarball).arg("-C").arg(&chroot.dir))?;
        Ok(chroot)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Runs argv inside the root; stdout on success, stdout and stderr in the error.
    fn run(&self, argv: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("chroot")
            .arg(&self.dir)
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .with_context(|| format!("chroot {argv:?}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            bail!("{argv:?} failed ({}): {}{}", out.status, stdout.trim(), stderr.trim());
        }
        Ok(stdout)
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Paths of a .deb's regular files (`dpkg --contents`), without the leading `.`.
fn deb_files(deb: &Path) -> anyhow::Result<BTreeSet<String>> {
    let listing = output(Command::new("dpkg").arg("--contents").arg(deb))?;
    Ok(contents_files(&listing))
}

fn contents_files(listing: &str) -> BTreeSet<String> {
    listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_owned())
        .collect()
}

fn no_shared_files(deb: &Path, other: &Path) -> anyhow::Result<()> {
    let ours = deb_files(deb)?;
    let theirs = deb_files(other)?;
    let shared: Vec<&String> = ours.intersection(&theirs).collect();
    if !shared.is_empty() {
        bail!("files also in live-build: {shared:?}");
    }
    Ok(())
}

/// What the package promises (#19): binary, unit, sysusers, conffile, man pages, completions,
/// license and changelog.
const EXPECTED_FILES: &[&str] = &[
    "usr/sbin/lb",
    "lib/systemd/system/lb.service",
    "usr/lib/sysusers.d/lb.conf",
    "etc/lb/lb.toml",
    "usr/share/man/man8/lb.8.gz",
    "usr/share/man/man8/lb-run.8.gz",
    "usr/share/man/man8/lb-check.8.gz",
    "usr/share/man/man5/lb.toml.5.gz",
    "usr/share/bash-completion/completions/lb",
    "usr/share/zsh/vendor-completions/_lb",
    "usr/share/fish/vendor_completions.d/lb.fish",
    "usr/share/doc/lb/copyright",
    "usr/share/doc/lb/changelog.Debian.gz",
];

fn files_in_place(chroot: &Chroot) -> anyhow::Result<()> {
    let missing: Vec<&&str> = EXPECTED_FILES.iter().filter(|f| !chroot.path(f).is_file()).collect();
    if !missing.is_empty() {
        bail!("missing: {missing:?}");
    }
    let conffiles = chroot.run(&["dpkg-query", "-W", "-f=${Conffiles}", "lb"])?;
    if !conffiles.contains("/etc/lb/lb.toml ") {
        bail!("/etc/lb/lb.toml is not a conffile: {conffiles:?}");
    }
    Ok(())
}

fn version(chroot: &Chroot) -> anyhow::Result<()> {
    let text = chroot.run(&["/usr/sbin/lb", "--version"])?;
    if !text.starts_with(&format!("lb {VERSION} (git ")) {
        bail!("unexpected: {text:?}");
    }
    Ok(())
}

fn verify_unit(chroot: &Chroot) -> anyhow::Result<()> {
    chroot.run(&["systemd-analyze", "verify", "--man=no", "/lib/systemd/system/lb.service"])?;
    Ok(())
}

/// Every page renders through man with groff's warnings on, and none is empty.
fn man_pages(chroot: &Chroot) -> anyhow::Result<()> {
    let listing = chroot.run(&["dpkg", "-L", "lb"])?;
    let pages: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with("/usr/share/man/"))
        .filter(|l| l.ends_with(".gz"))
        .collect();
    if pages.len() < 3 {
        bail!("too few man pages: {pages:?}");
    }
    for page in pages {
        let out = Command::new("chroot")
            .arg(&chroot.dir)
            .args(["man", "--warnings", "-l", page])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .env("MANPAGER", "cat")
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || !stderr.trim().is_empty() || out.stdout.len() < 200 {
            bail!("man -l {page}: {} {}", out.status, stderr.trim());
        }
    }
    Ok(())
}

/// dpkg itself refuses to unpack a package over another one's files: unpack live-build beside lb
/// (its dependencies are not needed for that), then take it out again.
fn beside_live_build(chroot: &Chroot) -> anyhow::Result<()> {
    chroot.run(&["dpkg", "--unpack", "/tmp/live-build.deb"])?;
    chroot.run(&["dpkg", "--purge", "--force-depends", "live-build"])?;
    Ok(())
}

fn remove_purge(chroot: &Chroot) -> anyhow::Result<()> {
    let conf = chroot.path(CONFFILE);
    chroot.run(&["dpkg", "--remove", "lb"])?;
    if chroot.path("usr/sbin/lb").exists() {
        bail!("remove left /usr/sbin/lb");
    }
    if !conf.is_file() {
        bail!("remove deleted /etc/lb/lb.toml");
    }
    chroot.run(&["dpkg", "--purge", "lb"])?;
    if conf.exists() || chroot.path("etc/lb").exists() {
        bail!("purge left /etc/lb/lb.toml");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_follow_the_binary() {
        let dynamic = "  NEEDED               libgcc_s.so.1\n  NEEDED               libc.so.6\n";
        let symbols = "0 DF *UND* 0 (GLIBC_2.2.5) memcpy\n0 DF *UND* 0 (GLIBC_2.34) pthread_create\n\
                       0 DF *UND* 0 (GLIBC_2.9) pipe2\n";
        let got = depends_from(dynamic, symbols).expect("depends");
        assert_eq!(got, "libc6 (>= 2.34), libgcc-s1 (>= 4.2), procps");
        let unknown = depends_from("  NEEDED  libssl.so.3\n", symbols);
        assert!(unknown.is_err(), "a library without a known package is an error");
        assert!(depends_from(dynamic, "").is_err(), "no glibc versions");
    }

    #[test]
    fn root_uses_the_machines_bookworm_sources() {
        let dir = std::env::temp_dir().join(format!("lb-apt-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sources.list.d")).expect("temp dir");
        let files = [
            ("sources.list", "# deb http://192.0.2.1/debian bookworm main\n"),
            ("sources.list.d/debian.sources", "Types: deb\nSuites: bookworm bookworm-updates\n"),
            ("sources.list.d/other.list", "deb http://192.0.2.1/x stable main\n"),
            ("sources.list.d/old.list.save", "deb http://192.0.2.1/debian bookworm main\n"),
        ];
        for (name, text) in files {
            fs::write(dir.join(name), text).expect("write");
        }
        let got = apt_sources(&dir).expect("sources");
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(got, [dir.join("sources.list.d/debian.sources")]);
    }

    #[test]
    fn contents_listing_gives_file_paths() {
        let listing = "drwxr-xr-x root/root         0 2023-05-02 10:00 ./usr/bin/\n\
                       -rwxr-xr-x root/root      1234 2023-05-02 10:00 ./usr/bin/lb\n\
                       lrwxrwxrwx root/root         0 2023-05-02 10:00 ./usr/bin/x -> lb\n";
        let files: Vec<String> = contents_files(listing).into_iter().collect();
        assert_eq!(files, ["/usr/bin/lb", "/usr/bin/x"]);
    }

    #[test]
    fn packaged_unit_runs_the_packaged_binary() {
        let unit = "# install notes\n# more\n[Service]\nExecStart=/usr/local/bin/lb run\n";
        let got = packaged_unit(unit);
        assert!(got.contains("ExecStart=/usr/sbin/lb run"), "{got}");
        assert!(!got.contains("install notes"), "{got}");
    }
}
