//! The command line, as clap derive structs. Handlers live in `commands/`.

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};
use switchboard_model::{HandoffMode, Transport, TrunkTransfer};

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Self-hosted AI phone agent that hands calls to humans in Salesforce.",
    long_about = "Self-hosted AI phone agent that hands calls to humans in Salesforce.\n\n\
        Start with `switchboard serve`: with no config file it keeps everything in ./data \
        (SQLite database, secret key, recordings) and serves the dashboard on \
        http://127.0.0.1:8080/. `switchboard doctor` checks the setup and says what to fix.\n\n\
        Settings come from flags, then SWITCHBOARD_<SECTION>_<KEY> environment variables, \
        then the config file (see switchboard.example.toml), then defaults.",
    after_help = "Exit codes: 0 success; 1 the operation failed (conflict, not found, a failed check or row); \
        2 invalid input or setup (config, flags, validation, database unreachable, port busy)."
)]
pub(crate) struct Cli {
    /// Config file [default: ./switchboard.toml if it exists]
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "SWITCHBOARD_CONFIG",
        hide_env_values = true,
        help_heading = "Global options"
    )]
    pub(crate) config: Option<PathBuf>,

    /// Data directory for the SQLite database, secret key and recordings [default: ./data]
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        help_heading = "Global options"
    )]
    pub(crate) data_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the server: dashboard and API (and, later, telephony)
    #[command(long_about = "Run the server until SIGINT or SIGTERM.\n\n\
        Creates the data directory and secret key if needed, migrates the database, and on \
        first start creates the dashboard user `admin` (password from SWITCHBOARD_ADMIN_PASSWORD, \
        else generated and printed once). Prints the dashboard URL when it is ready.")]
    Serve(ServeArgs),
    /// Check the configuration and environment and say what to fix
    #[command(
        long_about = "Check the configuration and environment and say what to fix.\n\n\
        One line per check: `ok`, `warn` or `FAIL`, with the fix after `—`. Exits 1 if any check fails."
    )]
    Doctor(DoctorArgs),
    /// Run the built-in Salesforce MIAW sandbox on its own (no database needed)
    #[command(
        long_about = "Run the built-in emulation of the Salesforce MIAW API on its own, \
        with its rep console at /sandbox/console, until SIGINT or SIGTERM.\n\n\
        Point anything that speaks MIAW at it (its SCRT URL is printed). Faults can be injected \
        from the flags below, or at run time with POST /sandbox/api/faults (JSON list of faults)."
    )]
    Sandbox(SandboxArgs),
    /// Place a test call: speak sentences, wait for replies, record, print a JSON summary
    #[command(
        long_about = "Place a real SIP test call and print a JSON summary.\n\n\
        The caller waits for the far end's greeting, then says each --say sentence (synthesised \
        with the configured TTS) and waits for the reply before the next; it records what both \
        sides said (--record) and, when offline speech recognition is installed, transcribes what \
        it heard. A --say of the form `[keys 123#]` presses keys instead; `[interrupt] TEXT` says \
        TEXT while the far end is still talking (a barge-in).\n\n\
        --to takes a SIP URI (sip:+14155550100@203.0.113.5:5060) or a bare number, which calls \
        this machine's own SIP listener (sip.addr). Exits 1 when the call fails."
    )]
    Call(CallArgs),
    #[command(flatten)]
    Data(DataCommand),
}

#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    /// Who to call: a SIP URI, or a number on this machine's SIP listener
    #[arg(long, value_name = "NUMBER|SIP-URI")]
    pub(crate) to: String,
    /// A sentence to say, in order (repeatable); `[keys 12#]` presses keys
    #[arg(long, value_name = "TEXT")]
    pub(crate) say: Vec<String>,
    /// A WAV file (8 kHz mono 16-bit, or anything sox-free that hound reads) to play first
    #[arg(long, value_name = "FILE")]
    pub(crate) wav: Option<PathBuf>,
    /// Write the call as a stereo WAV: far end left, us right
    #[arg(long, value_name = "FILE")]
    pub(crate) record: Option<PathBuf>,
    /// Give up (and hang up) after this many seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub(crate) timeout: u64,
    /// Our caller id (the From user)
    #[arg(long, value_name = "NUMBER", default_value = "+14155550199")]
    pub(crate) from: String,
    /// Stay on the line after the last reply until the far end hangs up
    #[arg(long)]
    pub(crate) wait_for_hangup: bool,
}

/// Commands that work on the database; `main` opens it for them.
#[derive(Debug, Subcommand)]
pub(crate) enum DataCommand {
    /// Create or update the database schema
    Migrate,
    /// Manage AI agents
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Manage the phone numbers callers dial, and which agent answers each
    #[command(subcommand)]
    Numbers(NumbersCommand),
    /// Manage SIP trunks (carriers and PBXs)
    #[command(subcommand)]
    Trunks(TrunksCommand),
    /// Manage known callers (matched by phone number)
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// Manage API tokens for scripts
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Inspect and re-drive handoffs to Salesforce
    #[command(subcommand)]
    Handoffs(HandoffsCommand),
    /// Salesforce: create a signing key, test the connection
    #[command(subcommand)]
    Salesforce(SalesforceCommand),
    /// Manage dashboard users
    #[command(subcommand)]
    Users(UsersCommand),
    /// Place a demo phone call that ends in a handoff (creates a demo agent if there is none)
    #[command(long_about = "Place a demo phone call that ends in a handoff.\n\n\
        Creates the agent `Demo` (with a few knowledge entries) bound to +14155550100 if no agent \
        exists, and a trunk `local` that lets this machine call in. Then it calls the running \
        `switchboard serve` over SIP (sip.addr) as the test caller: it asks for the opening hours, \
        then says \"I need to speak with a person\". The server's agent answers, hands off, and \
        delivers the transcript to Salesforce, or to the built-in sandbox when no org is configured. \
        The command waits for the delivery (up to --wait seconds) and prints where to look.\n\n\
        --text records the same conversation as a text call instead (no SIP, no speech).")]
    Demo(DemoArgs),
    /// Place an outbound call from an agent through a trunk (the running server dials)
    #[command(
        long_about = "Place an outbound call: the agent calls --to through a SIP trunk and \
        speaks first when answered, exactly like POST /api/v1/calls.\n\n\
        The running `switchboard serve` places the call (it owns the SIP listener): this command \
        asks it over HTTP at http.addr, with --token or SWITCHBOARD_TOKEN, or else a one-off API \
        token it creates in the database and revokes afterwards. It returns once the callee \
        answered and prints the session; busy, no answer and rejected calls exit 1 with the \
        reason (the session records it too)."
    )]
    Dial(DialArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DialArgs {
    /// The agent that calls (id or name)
    #[arg(long)]
    pub(crate) agent: String,
    /// Who to call: an E.164 number (through the trunk) or a sip: URI
    #[arg(long, value_name = "NUMBER|SIP-URI")]
    pub(crate) to: String,
    /// The trunk (name or id) [default: the only trunk, or the agent's]
    #[arg(long)]
    pub(crate) trunk: Option<String>,
    /// API token for the server [env: SWITCHBOARD_TOKEN]
    #[arg(long, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

#[derive(Debug, Args)]
pub(crate) struct SandboxArgs {
    /// Address to listen on [default: sandbox.addr, 127.0.0.1:8089]
    #[arg(long, value_name = "ADDR")]
    pub(crate) addr: Option<String>,
    /// Delay every request by this many milliseconds
    #[arg(long, value_name = "MS")]
    pub(crate) latency_ms: Option<u64>,
    /// Answer the next N requests with this HTTP status (with --times)
    #[arg(long, value_name = "STATUS")]
    pub(crate) fail_status: Option<u16>,
    /// How many requests --fail-status applies to
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) times: u32,
    /// With --fail-status 429/503: the Retry-After seconds to send
    #[arg(long, value_name = "SECONDS")]
    pub(crate) retry_after: Option<u64>,
    /// Apply the next N requests but drop their responses
    #[arg(long, value_name = "N")]
    pub(crate) lose_responses: Option<u32>,
    /// Close the connection on the next N requests without applying them
    #[arg(long, value_name = "N")]
    pub(crate) resets: Option<u32>,
    /// Hold the next N requests without answering (up to 60 s)
    #[arg(long, value_name = "N")]
    pub(crate) timeouts: Option<u32>,
    /// Turn User Verification on: only authenticated tokens, verified with this public JWK file
    #[arg(long, value_name = "JWK_FILE")]
    pub(crate) verify_with: Option<PathBuf>,
    /// The issuer authenticated identity tokens must carry (with --verify-with)
    #[arg(long, value_name = "ISS")]
    pub(crate) issuer: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Seconds to wait for the delivery (0: do not wait)
    #[arg(long, default_value_t = 30)]
    pub(crate) wait: u64,
    /// Record a text call instead of placing a phone call
    #[arg(long)]
    pub(crate) text: bool,
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

#[derive(Debug, Subcommand)]
pub(crate) enum HandoffsCommand {
    /// List handoffs, newest first
    List {
        /// Only this delivery status: pending, delivering, delivered, not_configured, dead_letter
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show a handoff with every delivery attempt
    Show {
        /// Handoff id or session id
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Queue a handoff for delivery again (after fixing what made it fail)
    Redrive {
        /// Handoff id or session id
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SalesforceCommand {
    /// Create an RSA key pair for customer identity tokens; prints the public JWK (with x5c) and PEM to register
    #[command(
        long_about = "Create an RSA key pair that signs customer identity tokens (authenticated callers).\n\n\
        Writes the private key (PKCS#8 PEM, mode 0600) to --out, and prints the public key as a JWK \
        (with the x5c certificate Salesforce asks for) and as PEM. Register the JWK under Setup → \
        Enhanced Chat User Verification → your keyset → New Key, then set salesforce.jwt_key_id, \
        salesforce.jwt_issuer and the private key (salesforce.jwt_private_key_file, or paste it in \
        Settings → Integrations → Salesforce)."
    )]
    Keygen {
        /// Key id (`kid`) to register the key under
        #[arg(long, default_value = "switchboard-1")]
        key_id: String,
        /// RS256 or RS512
        #[arg(long, default_value = "RS256")]
        algorithm: String,
        /// RSA modulus size
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Where to write the private key (refuses to overwrite)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Obtain a real token with the current settings and check the deployment
    Test {
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum UsersCommand {
    /// List dashboard users
    List(JsonFlag),
    /// Set a user's password (read from stdin, or generated and printed); ends their logins
    SetPassword {
        username: String,
        /// Read the new password from standard input instead of generating one
        #[arg(long)]
        stdin: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address for the dashboard and API, such as 127.0.0.1:8080 (port 0 picks a free port) [config: http.addr]
    #[arg(long, value_name = "ADDR")]
    pub(crate) http: Option<String>,
    /// Address for SIP, such as 0.0.0.0:5060 [config: sip.addr]
    #[arg(long, value_name = "ADDR")]
    pub(crate) sip: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    /// Print the checks as a JSON array of {check, status, detail, fix}
    #[arg(long)]
    pub(crate) json: bool,
}

/// `--json` for commands whose output scripts read.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct JsonFlag {
    /// Print JSON instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

// ---------------------------------------------------------------------------
// agents

#[derive(Debug, Subcommand)]
pub(crate) enum AgentsCommand {
    /// List agents
    List(JsonFlag),
    /// Add an agent
    #[command(
        long_about = "Add an agent. Every setting but --name has a default.\n\n\
        --from-json reads a whole agent (the API's agent JSON) from a file or `-` for stdin; \
        flags given next to it override its fields.",
        after_help = "Example:\n  switchboard agents add --name Support --handoff-mode live_transfer \\\n    --handoff-number +14155550123 --session-id-attribute OpencxSessionId"
    )]
    Add(Box<AgentAddArgs>),
    /// Show one agent (by id or name)
    Show {
        /// Agent id or name
        agent: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove an agent (by id or name); its numbers stay, unbound
    Remove {
        /// Agent id or name
        agent: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct AgentAddArgs {
    /// Name shown in the dashboard; unique
    #[arg(long, required_unless_present = "from_json")]
    pub(crate) name: Option<String>,
    /// Read the agent from a JSON file (`-` for stdin)
    #[arg(long, value_name = "FILE")]
    pub(crate) from_json: Option<PathBuf>,
    /// First thing callers hear
    #[arg(long)]
    pub(crate) greeting: Option<String>,
    /// BCP 47 language tag [default: en-US]
    #[arg(long)]
    pub(crate) language: Option<String>,
    /// Instructions and knowledge for the agent
    #[arg(long, conflicts_with = "instructions_file")]
    pub(crate) instructions: Option<String>,
    /// Read the instructions from a file
    #[arg(long, value_name = "FILE")]
    pub(crate) instructions_file: Option<PathBuf>,
    /// Voice of the text-to-speech provider [default: default]
    #[arg(long)]
    pub(crate) voice: Option<String>,
    /// How calls reach a human [default: logged_escalation]
    #[arg(long, value_parser = words(HandoffMode::ALL, HandoffMode::as_str))]
    pub(crate) handoff_mode: Option<String>,
    /// Number (E.164) or SIP URI dialled on live transfer
    #[arg(long, value_name = "NUMBER")]
    pub(crate) handoff_number: Option<String>,
    /// Phrase that asks for a person (repeat the flag for several) [default: built-in list]
    #[arg(long = "handoff-phrase", value_name = "PHRASE")]
    pub(crate) handoff_phrases: Vec<String>,
    /// Salesforce routing attribute that carries the session id, such as OpencxSessionId [default: SessionId]
    #[arg(long, value_name = "API_NAME")]
    pub(crate) session_id_attribute: Option<String>,
    /// IANA time zone for transcript timestamps [default: UTC]
    #[arg(long)]
    pub(crate) time_zone: Option<String>,
    /// Calls this agent takes at once [default: 10]
    #[arg(long, value_name = "N")]
    pub(crate) max_concurrent_calls: Option<u32>,
    /// Print the created agent as JSON
    #[arg(long)]
    pub(crate) json: bool,
}

// ---------------------------------------------------------------------------
// numbers

#[derive(Debug, Subcommand)]
pub(crate) enum NumbersCommand {
    /// List numbers
    List {
        /// Only numbers bound to this agent (id or name)
        #[arg(long, value_name = "AGENT")]
        agent: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Add a number, optionally bound to an agent
    #[command(after_help = "Numbers without a country code are read in phone.default_region.")]
    Add {
        /// The number, such as +14155550100 or (415) 555-0100
        number: String,
        /// Agent (id or name) that answers it
        #[arg(long)]
        agent: Option<String>,
        /// Free text shown next to the number
        #[arg(long, default_value = "")]
        label: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one number
    Show {
        /// The number (any common form) or its id
        number: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a number
    Remove {
        /// The number (any common form) or its id
        number: String,
    },
    /// Let an agent answer a number
    Bind {
        /// The number (any common form) or its id
        number: String,
        /// Agent (id or name)
        #[arg(long)]
        agent: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Detach a number from its agent (calls to it are refused)
    Unbind {
        /// The number (any common form) or its id
        number: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

// ---------------------------------------------------------------------------
// trunks

#[derive(Debug, Subcommand)]
pub(crate) enum TrunksCommand {
    /// List trunks
    List(JsonFlag),
    /// Add a trunk
    #[command(
        long_about = "Add a trunk. A trunk must allow at least one source address (--allow) \
        or require digest credentials (--inbound-username and a password).\n\n\
        Passwords are never taken as arguments (other users can see those in `ps`): \
        name an environment variable that holds it, or pipe it on stdin.",
        after_help = "Example:\n  SIP_PW='…' switchboard trunks add --name carrier --host sip.example.com \\\n    --allow 203.0.113.0/24 --outbound-username acme --outbound-password-env SIP_PW --register"
    )]
    Add(Box<TrunkAddArgs>),
    /// Show one trunk (by id or name); passwords are never shown
    Show {
        /// Trunk id or name
        trunk: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a trunk (by id or name)
    Remove {
        /// Trunk id or name
        trunk: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct TrunkAddArgs {
    /// Name; unique
    #[arg(long)]
    pub(crate) name: String,
    /// Host name or IP address of the carrier or PBX
    #[arg(long)]
    pub(crate) host: String,
    /// SIP port [default: 5060, 5061 for tls]
    #[arg(long)]
    pub(crate) port: Option<u16>,
    /// SIP transport [default: udp]
    #[arg(long, value_parser = words(Transport::ALL, Transport::as_str))]
    pub(crate) transport: Option<String>,
    /// Source address or CIDR allowed to send calls (repeat for several)
    #[arg(long = "allow", value_name = "CIDR")]
    pub(crate) allow: Vec<String>,
    /// Digest username the trunk must present on incoming calls
    #[arg(long, value_name = "USER")]
    pub(crate) inbound_username: Option<String>,
    /// Environment variable holding the inbound digest password
    #[arg(long, value_name = "VAR", conflicts_with = "inbound_password_stdin")]
    pub(crate) inbound_password_env: Option<String>,
    /// Read the inbound digest password from the first line of stdin
    #[arg(long)]
    pub(crate) inbound_password_stdin: bool,
    /// Username for outgoing calls and REGISTER
    #[arg(long, value_name = "USER")]
    pub(crate) outbound_username: Option<String>,
    /// Environment variable holding the outbound password
    #[arg(long, value_name = "VAR", conflicts_with_all = ["outbound_password_stdin"])]
    pub(crate) outbound_password_env: Option<String>,
    /// Read the outbound password from stdin (the line after the inbound one if both are read)
    #[arg(long)]
    pub(crate) outbound_password_stdin: bool,
    /// Register with the carrier (needs outbound credentials)
    #[arg(long)]
    pub(crate) register: bool,
    /// Caller id for outgoing calls
    #[arg(long, value_name = "NUMBER")]
    pub(crate) caller_id: Option<String>,
    /// How live transfers leave this trunk: bridge through us, or a blind REFER (falls back to the bridge if refused) [default: bridge]
    #[arg(long, value_parser = words(TrunkTransfer::ALL, TrunkTransfer::as_str))]
    pub(crate) transfer: Option<String>,
    /// Print the created trunk as JSON
    #[arg(long)]
    pub(crate) json: bool,
}

// ---------------------------------------------------------------------------
// contacts

#[derive(Debug, Subcommand)]
pub(crate) enum ContactsCommand {
    /// List contacts
    List {
        /// Only contacts whose name, phone or email contains TEXT
        #[arg(long, value_name = "TEXT", default_value = "")]
        search: String,
        /// At most N contacts
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Add a contact
    Add {
        /// Phone number (any common form)
        #[arg(long)]
        phone: String,
        /// Full name
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long)]
        /// Email address
        email: Option<String>,
        /// The contact's id in the CRM (subject of its identity token)
        #[arg(long, value_name = "ID")]
        external_id: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one contact (by id or phone)
    Show {
        /// Contact id or phone number
        contact: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a contact (by id or phone)
    Remove {
        /// Contact id or phone number
        contact: String,
    },
    /// Import contacts from CSV, updating those with the same phone
    #[command(
        long_about = "Import contacts from a CSV file (`-` for stdin), creating new ones and \
        updating those with the same phone.\n\n\
        The first row names the columns, in any order: phone (required), name, email, external_id. \
        Rows that fail are reported (`row 3: phone: …`) and skipped; the others are kept. \
        Exits 1 if any row failed."
    )]
    Import {
        /// CSV file, or `-` for stdin
        file: PathBuf,
        #[command(flatten)]
        json: JsonFlag,
    },
}

// ---------------------------------------------------------------------------
// tokens

#[derive(Debug, Subcommand)]
pub(crate) enum TokensCommand {
    /// Create a token; its secret is printed once
    Create {
        /// What the token is for, such as `ci` or `crm-sync`
        #[arg(long)]
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List tokens (never their secrets)
    List(JsonFlag),
    /// Revoke a token
    Revoke {
        /// Token id (from `tokens list`)
        id: String,
    },
}

/// A clap parser accepting exactly the words of a model enum, listed in `--help`.
fn words<T: Copy + 'static>(
    all: &'static [T],
    word: fn(&T) -> &'static str,
) -> PossibleValuesParser {
    PossibleValuesParser::new(all.iter().map(word))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_work_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "switchboard",
            "agents",
            "list",
            "--data-dir",
            "/tmp/x",
            "--config",
            "/tmp/c.toml",
        ])
        .expect("parses");
        assert_eq!(cli.data_dir, Some(PathBuf::from("/tmp/x")));
        assert_eq!(cli.config, Some(PathBuf::from("/tmp/c.toml")));
    }
}
