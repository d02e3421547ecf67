//! A bpf filesystem mounted on a test folder in the host mount namespace, so agents started with
//! `ip netns exec` can pin their dataplane there (`lb run --pin-dir`); unmounted on drop.

use std::{path::PathBuf, process::Command};

use anyhow::{Result, bail};

pub struct BpfFs {
    pub dir: PathBuf,
}

impl BpfFs {
    pub fn mount(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let status = Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&dir).status()?;
        if !status.success() {
            bail!("mounting a bpf filesystem on {} failed", dir.display());
        }
        Ok(Self { dir })
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
