//! The `wxexpress` command line. Everything it runs lives in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wxexpress::config;

#[derive(Parser)]
#[command(
    name = "wxexpress",
    version,
    about = "Gateway from an express carrier's backoffice to WeChat phone-number logistics push"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: HTTP server, outbox workers, token manager. Migrates on start.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Use the WeChat sandbox whatever [wechat] says (loopback listeners only).
        #[arg(long)]
        sandbox: bool,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the WeChat sandbox (an emulator of WeChat's side) on its own.
    Sandbox {
        #[arg(long)]
        listen: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Allow a non-loopback listen address (its control routes then answer anyone).
        #[arg(long)]
        allow_remote: bool,
    },
    /// A synthetic day through the whole pipeline against the in-process sandbox; exits 0
    /// only if every expected notification arrived.
    Demo {
        /// How many waybills the day has.
        #[arg(long, default_value_t = 2000)]
        waybills: usize,
        /// Seed of the synthetic day (same seed, same day).
        #[arg(long, default_value_t = 20261111)]
        seed: u64,
        /// Run without injected WeChat faults.
        #[arg(long)]
        no_faults: bool,
    },
    /// Outbox operations.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// The outcome feed and webhook.
    Outcomes {
        #[command(subcommand)]
        command: OutcomesCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The bench's load generator, started by `wxexpress bench` (not for use by hand).
    #[command(name = "bench-load", hide = true)]
    BenchLoad {
        /// The generator's orders, as JSON.
        orders: String,
    },
    /// Measure this machine: each hot path beside its baseline in the same run.
    Bench {
        /// PostgreSQL instead of a temporary SQLite database (it must be empty or migrated).
        #[arg(long)]
        database_url: Option<String>,
        /// Length of each measured run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent connections of the load generator.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Waybills per data set (reverse queries; each side of the ingest, with 10 events
        /// each; all of them pushed at the end).
        #[arg(long, default_value_t = 2000)]
        waybills: usize,
        /// SQLite's `synchronous` for the run: `full` (the default, as `serve`) or `normal`.
        #[arg(long, default_value = "full", value_parser = ["full", "normal"])]
        synchronous: String,
    },
    /// Questions to WeChat about our own calls.
    Wechat {
        #[command(subcommand)]
        command: WechatCommand,
    },
}

#[derive(Subcommand)]
enum WechatCommand {
    /// What WeChat logged for the failed call whose errmsg carried RID (kept 7 days).
    Rid {
        rid: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Bring dead entries back to pending so the workers retry them now.
    Redrive {
        /// Only this waybill's entries.
        #[arg(long)]
        waybill: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print entry counts by state.
    Stats {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum OutcomesCommand {
    /// Send the outcomes decided in a time range to the webhook again: the same item ids,
    /// new webhook-ids. Queued durably, then sent; what fails stays for the gateway's retries.
    Replay {
        /// From this time: Unix seconds or RFC 3339 (`2026-12-07T08:00:00+08:00`).
        #[arg(long)]
        since: String,
        /// Until this time (excluded); default: now.
        #[arg(long)]
        until: Option<String>,
        /// Only these outcomes, comma-separated (`unbound,dead`).
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print the effective settings, secrets redacted.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

impl Command {
    /// The configuration a command runs with: `Some((--config, sandbox mode))`, or `None`
    /// for the commands that need none (the demo and the bench build their own).
    /// `wxexpress sandbox` plays WeChat itself, so it loads in sandbox mode.
    fn configured(&self) -> Option<(Option<&Path>, bool)> {
        fn path(c: &Option<PathBuf>) -> Option<&Path> {
            c.as_deref()
        }
        match self {
            Command::Serve { config, sandbox } => Some((path(config), *sandbox)),
            Command::Sandbox { config, .. } => Some((path(config), true)),
            Command::Migrate { config }
            | Command::Outbox {
                command: OutboxCommand::Redrive { config, .. } | OutboxCommand::Stats { config },
            }
            | Command::Wechat {
                command: WechatCommand::Rid { config, .. },
            }
            | Command::Outcomes {
                command: OutcomesCommand::Replay { config, .. },
            }
            | Command::Config {
                command: ConfigCommand::Check { config },
            } => Some((path(config), false)),
            Command::Demo { .. } | Command::Bench { .. } | Command::BenchLoad { .. } => None,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo draws a progress bar and the bench prints a table: only warnings. The other
    // commands log as their configuration's `[log]` says, once it is loaded.
    if cli.command.configured().is_none() {
        wxexpress::telemetry::init_with("warn,sqlx=error,actix_http=off,actix_server=error");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Loaded once, for every command that runs with a configuration; one line per problem.
    let loaded = match cli.command.configured() {
        None => None,
        Some((path, sandbox)) => match config::load(path, sandbox) {
            Ok(s) => {
                wxexpress::telemetry::init_from(&s.log);
                Some(s)
            }
            Err(e) => {
                for line in &e.0 {
                    eprintln!("configuration error: {line}");
                }
                return Ok(ExitCode::from(2));
            }
        },
    };
    match cli.command {
        Command::Serve { .. } => {
            let settings = loaded.expect("Command::configured loads it");
            wxexpress::app::serve(settings).await?;
        }
        Command::Migrate { .. } => {
            let settings = loaded.expect("Command::configured loads it");
            let store = wxexpress::app::connect_store(&settings).await?;
            store.migrate().await?;
            tracing::info!(database = %config::redact_url(&settings.database.url), "migrations applied");
        }
        Command::Sandbox {
            listen,
            allow_remote,
            ..
        } => {
            let settings = loaded.expect("Command::configured loads it");
            wxexpress::app::run_sandbox(&settings, listen.as_deref(), allow_remote).await?;
        }
        Command::Demo {
            waybills,
            seed,
            no_faults,
        } => {
            let opts = wxexpress::demo::DemoOptions {
                waybills,
                seed,
                faults: !no_faults,
                ..Default::default()
            };
            let report = wxexpress::demo::run(opts).await?;
            wxexpress::demo::print_report(&report);
            return Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Outbox {
            command: OutboxCommand::Redrive { waybill, .. },
        } => {
            let settings = loaded.expect("Command::configured loads it");
            let store = wxexpress::app::connect_store(&settings).await?;
            let n = store
                .redrive_dead(waybill.as_deref(), wxexpress::clock::now_ms())
                .await?;
            println!(
                "redriven: {n} dead entr{} back to pending",
                if n == 1 { "y" } else { "ies" }
            );
        }
        Command::Outbox {
            command: OutboxCommand::Stats { .. },
        } => {
            let settings = loaded.expect("Command::configured loads it");
            let store = wxexpress::app::connect_store(&settings).await?;
            for (state, reason, n) in store.outbox_counts().await? {
                println!("{state:<10} {:<10} {n}", reason.map_or("", |r| r.as_str()));
            }
        }
        Command::BenchLoad { orders } => {
            print!("{}", wxexpress::bench::run_load(&orders).await?);
        }
        Command::Bench {
            database_url,
            seconds,
            connections,
            waybills,
            synchronous,
        } => {
            use wxexpress::store::section::Synchronous;
            let opts = wxexpress::bench::BenchOptions {
                database_url,
                seconds,
                connections,
                waybills: waybills.max(1),
                synchronous: if synchronous == "normal" {
                    Synchronous::Normal
                } else {
                    Synchronous::Full
                },
            };
            let (backend, rows) = wxexpress::bench::run(opts.clone()).await?;
            print!("{}", wxexpress::bench::render(&backend, &opts, &rows));
        }
        Command::Wechat {
            command: WechatCommand::Rid { rid, .. },
        } => {
            let settings = loaded.expect("Command::configured loads it");
            match wxexpress::app::wechat_rid(&settings, &rid).await {
                Ok(text) => print!("{text}"),
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Outcomes {
            command:
                OutcomesCommand::Replay {
                    since,
                    until,
                    outcome,
                    ..
                },
        } => {
            let settings = loaded.expect("Command::configured loads it");
            let args = wxexpress::outcomes::replay::ReplayArgs {
                since: &since,
                until: until.as_deref(),
                outcome: outcome.as_deref(),
            };
            if let Err(e) = wxexpress::app::outcomes_replay(&settings, args).await {
                eprintln!("{e}");
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Config {
            command: ConfigCommand::Check { .. },
        } => {
            let settings = loaded.expect("Command::configured loads it");
            for n in &settings.notices {
                println!("# {n}");
            }
            print!("{}", settings.redacted_toml());
            println!("# configuration OK");
        }
    }
    Ok(ExitCode::SUCCESS)
}
