//! `lb`: the director agent and its CLI.

use std::process::ExitCode;

use clap::Parser as _;
use lb::{
    agent::{self, RunOptions},
    cli::{Cli, Command, render},
    config::SystemHost,
    control::{
        client,
        proto::{BackendsView, ChangedView, FlowsView, Request, StatusView},
    },
    overrides::ServiceSelector,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            // Under journald an error line needs its priority like the log's lines.
            let prefix = if lb::logging::under_journald() { "<3>" } else { "" };
            eprintln!("{prefix}lb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            config,
            socket,
            xdp_mode,
            metrics,
            http,
            format,
            strict,
            pin_dir,
            no_pin,
            state_file,
            dataplane,
            keep_ipvs_on_stop,
            log_format,
            log_level,
        } => {
            // Before the runtime starts its threads: a stop signal from now on waits for the
            // agent's handlers instead of killing it half-started.
            agent::block_start_signals();
            agent::limit_malloc_arenas();
            lb::logging::init(&lb::logging::LogSettings::from_env(log_format, log_level));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            // Hitless by default: pinned where a bpf filesystem is mounted.
            let pin_dir = match lb::dataplane::xdp::choose_pin_dir(
                no_pin,
                pin_dir,
                lb::dataplane::xdp::is_bpffs,
            ) {
                Ok(dir) => {
                    tracing::info!(dir = %dir.display(), "pinning the dataplane (hitless restarts)");
                    Some(dir)
                }
                Err(why) if no_pin => {
                    tracing::info!("not pinning the dataplane: {why}");
                    None
                }
                Err(why) => {
                    tracing::warn!("not pinning the dataplane: {why}");
                    None
                }
            };
            let pinning = pin_dir.map(|dir| lb::dataplane::xdp::Pinning {
                dir,
                state_file: state_file.unwrap_or_else(|| {
                    socket
                        .parent()
                        .unwrap_or(std::path::Path::new("/run/lb"))
                        .join("dataplane.json")
                }),
            });
            let ipvs_state = socket
                .parent()
                .unwrap_or(std::path::Path::new("/run/lb"))
                .join("ipvs-services.json");
            let result = rt.block_on(agent::run(RunOptions {
                config,
                socket,
                dataplane,
                ipvs_state,
                keep_ipvs_on_stop,
                xdp_mode,
                metrics,
                http,
                format,
                strict,
                pinning,
            }));
            // A reload still reading its file would delay the exit until it ends, only to be
            // discarded (the agent is closed): leave it behind.
            rt.shutdown_timeout(std::time::Duration::from_millis(500));
            result?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config: path, format, strict, json } => {
            let printed = if json {
                lb::cli::check::check_json(&path, &SystemHost, format, strict)?
            } else {
                lb::cli::check::check_text(&path, &SystemHost, format, strict)
            };
            Ok(printed.emit())
        }
        Command::Backends { socket, json, stats } => {
            let data = client::call(&socket, &Request::Backends {})?;
            if json {
                out(&format!("{}\n", serde_json::to_string_pretty(&data)?))?;
            } else {
                let v: BackendsView = serde_json::from_value(data)?;
                let text = if stats { render::backends_stats(&v) } else { render::backends(&v) };
                out(&text)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload { socket } => {
            let data = client::call(&socket, &Request::Reload {})?;
            out(&format!(
                "reloaded {} ({} services, {} real servers)\n",
                data["config"].as_str().unwrap_or("?"),
                data["services"],
                data["reals"]
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Drain { service, real, socket } => {
            let req = Request::Drain { service: selector(&service), real: real.to_string() };
            print_changed(&client::call(&socket, &req)?)
        }
        Command::Undrain { service, real, socket } => {
            let req = Request::Undrain { service: selector(&service), real: real.to_string() };
            print_changed(&client::call(&socket, &req)?)
        }
        Command::Weight { service, real, weight, socket } => {
            let req = Request::Weight {
                service: selector(&service),
                real: real.to_string(),
                weight: u64::from(weight),
            };
            print_changed(&client::call(&socket, &req)?)
        }
        Command::Man { dir } => {
            for page in lb::cli::write_man_pages(&dir)? {
                out(&format!("{}\n", page.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            lb::cli::write_completions(shell, &mut script);
            out(&String::from_utf8_lossy(&script))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Convert { config: path, format } => {
            Ok(lb::cli::convert::convert_printed(&path, format).emit())
        }
        Command::Realserver { action, vips, dev, state, tunnel, gue_port, outer } => {
            let tunnel = lb::net::realserver::Tunnel::from_options(tunnel, gue_port)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let options = lb::net::realserver::Options { vips, tunnel, outer, dev, state };
            for line in rt.block_on(lb::net::realserver::run(action, &options))? {
                out(&format!("{line}\n"))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Flows { socket, json, vip, limit } => {
            let req = Request::Flows { vip: vip.map(|v| v.to_string()), limit: Some(limit) };
            let data = client::call(&socket, &req)?;
            if json {
                out(&format!("{}\n", serde_json::to_string_pretty(&data)?))?;
            } else {
                let v: FlowsView = serde_json::from_value(data)?;
                out(&render::flows(&v))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ExportTableWatchdog => {
            lb::bgp::speaker::export_table_watchdog(std::io::stdin().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bgp { action, vip, socket } => {
            let req = Request::Bgp {
                action: action.as_str().to_owned(),
                vip: vip.map(|v| v.to_string()),
            };
            let data = client::call(&socket, &req)?;
            for vip in data["vips"].as_array().into_iter().flatten() {
                out(&format!("{}: {}\n", vip.as_str().unwrap_or("?"), action.as_str()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { socket, json } => {
            let data = client::call(&socket, &Request::Status {})?;
            if json {
                out(&format!("{}\n", serde_json::to_string_pretty(&data)?))?;
            } else {
                let v: StatusView = serde_json::from_value(data)?;
                out(&render::status(&v))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes `text` to standard output. A reader that went away (`lb status | head -1`, `| grep -q`)
/// is not an error of lb: the rest of the output is not wanted, so it ends quietly (exit 0).
fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => Ok(result?),
    }
}

/// The selector as the agent parses it back.
fn selector(s: &ServiceSelector) -> String {
    s.to_string()
}

/// Prints what `lb drain/undrain/weight` changed, one real per line.
fn print_changed(data: &serde_json::Value) -> anyhow::Result<ExitCode> {
    let changed: Vec<ChangedView> = serde_json::from_value(data["changed"].clone())?;
    for c in changed {
        out(&format!("{} -> {}: {} (weight {})\n", c.service, c.real, c.state, c.weight))?;
    }
    Ok(ExitCode::SUCCESS)
}
