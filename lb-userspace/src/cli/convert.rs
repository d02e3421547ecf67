//! `lb convert -c FILE`: a configuration file in either format as native TOML, for migrating a
//! keepalived.conf (or tidying a TOML file). The text is [`crate::config::emit`]'s, after a header
//! naming the file and a `# note:` line for each warning of the keepalived front end, so that what
//! lb does not act on is not lost silently.
//!
//! The file is validated as `lb check` validates it, except that its interfaces need not exist
//! here: a file is often converted on another machine than the director that runs it (`lb check`
//! there checks them).

use std::fmt::Write as _;
use std::path::Path;

use super::Printed;
use crate::config::{ConfigErrors, HostView, Loaded, emit};
use crate::config::{FormatChoice, Strictness, load};

/// A host on which every interface exists.
struct AnyInterface;

impl HostView for AnyInterface {
    fn interface_exists(&self, _: &str) -> bool {
        true
    }
}

/// The native TOML text of the configuration at `path`, with its header and notes.
///
/// # Errors
/// Every problem of the file, located, as `lb check` reports them.
pub fn convert(path: &Path, format: FormatChoice) -> Result<String, ConfigErrors> {
    let loaded = load(path, format, &AnyInterface, Strictness::Lenient)?;
    Ok(converted(path, &loaded))
}

/// `lb convert` as printed: the TOML on stdout (exit 0), or every error on stdout (exit 1).
pub fn convert_printed(path: &Path, format: FormatChoice) -> Printed {
    match convert(path, format) {
        Ok(stdout) => Printed { stdout, stderr: String::new(), code: 0 },
        Err(errors) => {
            let mut stdout = String::new();
            for e in errors.iter() {
                let _ = writeln!(stdout, "{e}");
            }
            Printed { stdout, stderr: String::new(), code: 1 }
        }
    }
}

/// `loaded` as native TOML: `# converted from FILE by lb convert`, a `# note:` per warning, then
/// the settings.
fn converted(path: &Path, loaded: &Loaded) -> String {
    let mut out = comment(&format!("converted from {} by lb convert", path.display()));
    for w in &loaded.warnings {
        let note = format!("note: {}:{}:{}: {}", w.file.display(), w.line, w.col, w.message);
        out.push_str(&comment(&note));
    }
    let body = emit(&loaded.config);
    if !body.is_empty() {
        out.push('\n');
        out.push_str(&body);
    }
    out
}

/// `# text` and a line end; characters a TOML comment may not hold become spaces.
fn comment(text: &str) -> String {
    let mut line = String::from("# ");
    for c in text.chars() {
        line.push(if c.is_control() && c != '\t' { ' ' } else { c });
    }
    let _ = writeln!(line);
    line
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::parse_toml;

    /// A scratch file: its path, and the guard that removes its folder when dropped.
    struct Scratch {
        path: PathBuf,
        _guard: tempfile::TempDir,
    }

    impl Scratch {
        fn new(name: &str, text: &str) -> Scratch {
            let dir = crate::testutil::scratch_dir("lb-convert-");
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            Scratch { path, _guard: dir }
        }
    }

    const KEEPALIVED: &str = "\
global_defs {
    router_id lb1
}
vrrp_instance VI_1 {
    interface ens3
    virtual_router_id 51
    virtual_ipaddress {
        192.0.2.100/24
    }
}
virtual_server 192.0.2.100 80 {
    lb_kind DR
    protocol TCP
    real_server 192.0.2.11 80 {
        weight 2
    }
}
";

    #[test]
    fn a_keepalived_conf_becomes_native_toml_with_its_warnings_as_notes() {
        let file = Scratch::new("keepalived.conf", KEEPALIVED);
        let text = convert(&file.path, FormatChoice::Auto).unwrap_or_else(|e| panic!("{e}"));
        let name = file.path.display();
        let expected = format!(
            "# converted from {name} by lb convert
# note: {name}:2:5: `router_id`: accepted, not acted on (it names this director only in keepalived's e-mail and SNMP)

[[virtual_server]]
vip = \"192.0.2.100\"
port = 80
interface = \"ens3\"
lb_algo = \"wlc\"

[[virtual_server.real_server]]
address = \"192.0.2.11\"
weight = 2

[[vrrp_instance]]
name = \"VI_1\"
interface = \"ens3\"
virtual_router_id = 51
virtual_ipaddress = [\"192.0.2.100/24\"]
"
        );
        assert_eq!(text, expected);
        // What it says is what the keepalived.conf said.
        let original = load(&file.path, FormatChoice::Auto, &AnyInterface, Strictness::Lenient)
            .unwrap()
            .config;
        let again = parse_toml(&text, Path::new("converted.toml"), &AnyInterface).unwrap();
        assert_eq!(again.virtual_servers.len(), 1);
        assert_eq!(again.virtual_servers[0].real_servers[0].weight, 2);
        assert_eq!(
            again.vrrp.instances[0].virtual_ipaddress,
            original.vrrp.instances[0].virtual_ipaddress
        );
        assert_eq!(emit(&again), emit(&original));
    }

    #[test]
    fn the_format_can_be_forced() {
        let toml = Scratch::new(
            "lb.conf",
            "[[virtual_server]]\nvip = '192.0.2.1'\nport = 80\ninterface = 'eth9'\n",
        );
        // Detected by content, despite the name; its interface need not exist here.
        let text = convert(&toml.path, FormatChoice::Auto).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.ends_with("vip = \"192.0.2.1\"\nport = 80\ninterface = \"eth9\"\n"), "{text}");
        let errors = convert(&toml.path, FormatChoice::Keepalived).unwrap_err();
        assert!(
            errors.to_string().starts_with(&format!("{}:1:1: ", toml.path.display())),
            "{errors}"
        );
    }

    #[test]
    fn bad_input_is_every_error_located() {
        let file = Scratch::new(
            "bad.conf",
            "virtual_server 192.0.2.300 80 {\n    lb_kind DR\n    weigth 1\n}\n",
        );
        let errors = convert(&file.path, FormatChoice::Auto).unwrap_err();
        let name = file.path.display();
        assert_eq!(
            errors.to_string(),
            format!(
                "{name}:1:16: the virtual_server address must be an IP address, found \"192.0.2.300\"\n\
                 {name}:3:5: unknown keyword `weigth` in virtual_server; did you mean `weight`?"
            )
        );
        let missing = convert(Path::new("/nonexistent/lb.toml"), FormatChoice::Auto).unwrap_err();
        assert!(
            missing.to_string().starts_with("/nonexistent/lb.toml:1:1: cannot read"),
            "{missing}"
        );
    }

    #[test]
    fn notes_stay_comments() {
        assert_eq!(comment("a\nb\tc\u{7}"), "# a b\tc \n");
    }
}
