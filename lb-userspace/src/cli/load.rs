//! Reading a config file in either format, as `lb check`, `lb run` and reloads do.

use std::path::Path;

use crate::config::{self, ConfigErrors, Format, HostView, Loaded, keepalived};

/// Which front end reads the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatChoice {
    /// Detect from the content (and the `.conf` extension).
    #[default]
    Auto,
    /// Native TOML (docs/config.md).
    Toml,
    /// keepalived.conf (docs/keepalived.md).
    Keepalived,
}

/// Loads `path` with the chosen front end; `strict` turns keepalived warnings into errors.
pub fn load(
    path: &Path,
    host: &dyn HostView,
    format: FormatChoice,
    strict: bool,
) -> Result<Loaded, ConfigErrors> {
    match format {
        FormatChoice::Auto => keepalived::load_any(path, host, strict),
        FormatChoice::Keepalived => keepalived::load(path, host, strict),
        FormatChoice::Toml => {
            let config = config::load(path, host)?;
            let notices = config::notices(&config);
            Ok(Loaded { config, format: Format::Toml, warnings: Vec::new(), notices })
        }
    }
}
