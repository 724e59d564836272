//! Argument parsing and command dispatch. Every failure prints one message on stderr and exits
//! with status 1; success exits 0.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "bak",
    version = bakend_core::VERSION,
    about = "Bakend: collections, auth, storage, functions, jobs and realtime in one executable"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Path to bakend.json (default ./bakend.json); the project directory is its folder.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormatArg::Text)]
    pub log_format: LogFormatArg,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the version.
    Version,
    /// Create a new project in ./NAME (or in the current directory).
    Init {
        /// Directory to create the project in.
        name: Option<String>,
    },
    /// Start the server.
    Start(StartArgs),
    /// Start the server for development (same as `start --watch`).
    Dev(StartArgs),
    /// Manage admin accounts.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Manage stored files.
    Storage {
        #[command(subcommand)]
        command: StorageCommand,
    },
    /// Keep collections/*.json and the database's collections in step.
    Migrate {
        #[command(subcommand)]
        command: MigrateCommand,
    },
    /// Back up the database and storage folder into one .tar.gz, or restore one.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Inspect user functions (functions/**/*.ts).
    Functions {
        #[command(subcommand)]
        command: FunctionsCommand,
    },
    /// Cron jobs (jobs/**/*.ts): list them, show their run history, run one now.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Load and validate the jobs; print name, schedule, file and next run of each.
    List,
    /// Print the run history of a job, oldest first (works while the server runs).
    Runs {
        /// Job name: the path below jobs/ without .ts (e.g. cleanup, reports/daily).
        name: String,
    },
    /// Run a job now, through the running server if there is one, and print the outcome.
    Run {
        /// Job name: the path below jobs/ without .ts.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Write a consistent snapshot of the database (safe while the server runs) and the
    /// storage folder, with a manifest of counts and SHA-256 checksums, to one .tar.gz.
    Create {
        /// Archive to write (relative to the project folder); default
        /// bakend-backup-<time>.tar.gz in the project folder.
        #[arg(long, short = 'o', value_name = "PATH")]
        output: Option<PathBuf>,
    },
    /// Check a backup (manifest, checksums, integrity) and put it in place of the database
    /// and storage folder. Refuses while a server runs.
    Restore {
        /// The archive (relative to the project folder).
        archive: PathBuf,
        /// Overwrite an existing database and storage folder.
        #[arg(long, short = 'f')]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum MigrateCommand {
    /// Show, field by field, how collections/*.json differ from the database, and which
    /// records would block `apply`. Exits 1 when they differ. Safe while the server runs.
    Status,
    /// Bring the database in line with collections/*.json in one transaction, rebuilding
    /// tables where needed and keeping every row. Refuses while a server runs.
    Apply {
        /// Also make changes that lose or invalidate existing data (listed by `status`).
        #[arg(long, short = 'f')]
        force: bool,
    },
    /// Write every collection in the database to collections/<name>.json (stable key order).
    Export,
}

#[derive(Subcommand, Debug)]
pub enum FunctionsCommand {
    /// Print every registered trigger (collection, type, event type, project-relative file)
    /// without starting the server.
    List,
}

#[derive(Subcommand, Debug)]
pub enum StorageCommand {
    /// Remove files no record references (older than the grace period) and blobs without a
    /// metadata row. Safe while the server runs.
    Prune {
        /// Keep files younger than this (`30m`, `1h`, `2d`, `0s`).
        #[arg(long, value_name = "DURATION", default_value = "1h")]
        grace: String,
        /// List what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also print each `storage.deleted` event (JSON, one per line) on stdout.
        #[arg(long)]
        print_events: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create an admin account, or promote an existing account to admin.
    Create {
        /// Email of the account.
        email: String,
        /// Read the password from standard input (one line) instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct StartArgs {
    /// Port to listen on (overrides bakend.json and BAKEND_PORT).
    #[arg(long, value_name = "N")]
    pub port: Option<String>,
    /// Reload functions and jobs when their files change.
    #[arg(long)]
    pub watch: bool,
}

pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                _ => {
                    let _ = e.print();
                    ExitCode::FAILURE
                }
            };
        }
    };
    let result = match &cli.command {
        None => {
            let _ = Cli::command().print_help();
            println!();
            return ExitCode::FAILURE;
        }
        Some(Command::Version) => {
            println!("{}", bakend_core::VERSION);
            Ok(())
        }
        Some(Command::Init { name }) => crate::init::run(name.as_deref()),
        Some(Command::Start(args)) => crate::start::run(&cli, args, args.watch),
        Some(Command::Dev(args)) => crate::start::run(&cli, args, true),
        Some(Command::Admin {
            command:
                AdminCommand::Create {
                    email,
                    password_stdin,
                },
        }) => crate::admin::create(&cli, email, *password_stdin),
        Some(Command::Storage {
            command:
                StorageCommand::Prune {
                    grace,
                    dry_run,
                    print_events,
                },
        }) => crate::storage::prune(&cli, grace, *dry_run, *print_events),
        Some(Command::Functions {
            command: FunctionsCommand::List,
        }) => crate::functions::list(&cli),
        Some(Command::Backup { command }) => match command {
            BackupCommand::Create { output } => crate::backup::create(&cli, output.as_deref()),
            BackupCommand::Restore { archive, force } => {
                crate::backup::restore(&cli, archive, *force)
            }
        },
        Some(Command::Migrate { command }) => match command {
            MigrateCommand::Status => match crate::migrate::status(&cli) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::FAILURE,
                Err(e) => Err(e),
            },
            MigrateCommand::Apply { force } => crate::migrate::apply(&cli, *force),
            MigrateCommand::Export => crate::migrate::export(&cli),
        },
        Some(Command::Jobs { command }) => match command {
            JobsCommand::List => crate::jobs::list(&cli),
            JobsCommand::Runs { name } => crate::jobs::runs(&cli, name),
            JobsCommand::Run { name } => crate::jobs::run(&cli, name),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
