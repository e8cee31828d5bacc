//! Progress of the slow steps of a deploy (encrypting, uploading, unpacking, starting), on
//! standard error so it never mixes with a command's output: a bar on a terminal, plain lines
//! (at the start, every quarter and the end) otherwise, nothing with `--json`.

use std::io::IsTerminal;

/// One step with a known amount of bytes to go through.
pub(crate) struct Step {
    name: String,
    total: u64,
    done: u64,
    mode: Mode,
}

enum Mode {
    Quiet,
    Bar(indicatif::ProgressBar),
    /// The last quarter printed.
    Lines(u64),
}

impl Step {
    /// Starts step `name` over `total` bytes; `quiet` shows nothing.
    pub(crate) fn new(name: impl Into<String>, total: u64, quiet: bool) -> Self {
        let name = name.into();
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(total);
            let style = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}, {eta} left",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(name.clone());
            Mode::Bar(bar)
        } else {
            if total == 0 {
                eprintln!("{name}");
            } else {
                eprintln!("{name}: {}", mib(total));
            }
            Mode::Lines(0)
        };
        Self { name, total, done: 0, mode }
    }

    /// Sets how many bytes are done.
    pub(crate) fn set(&mut self, done: u64) {
        self.done = done.min(self.total);
        match &mut self.mode {
            Mode::Quiet => {}
            Mode::Bar(bar) => bar.set_position(self.done),
            Mode::Lines(last) => {
                let quarter = (self.done.saturating_mul(4)).checked_div(self.total).unwrap_or(4);
                if quarter > *last && quarter < 4 {
                    *last = quarter;
                    eprintln!("{}: {}% of {}", self.name, quarter * 25, mib(self.total));
                }
            }
        }
    }

    /// Adds `bytes` to what is done.
    pub(crate) fn add(&mut self, bytes: u64) {
        self.set(self.done.saturating_add(bytes));
    }

    /// Ends the step.
    pub(crate) fn finish(self) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Bar(bar) => bar.finish_and_clear(),
            Mode::Lines(_) => eprintln!("{}: done", self.name),
        }
    }
}

/// A byte count in MiB, for people.
pub(crate) fn mib(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let mib = bytes as f64 / f64::from(1u32 << 20);
    format!("{mib:.1} MiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_clamped_to_the_total() {
        let mut step = Step::new("encrypting", 100, true);
        step.add(60);
        step.add(60);
        assert_eq!(step.done, 100);
        step.set(10);
        assert_eq!(step.done, 10);
    }

    #[test]
    fn an_empty_step_is_complete() {
        let mut step = Step::new("uploading", 0, true);
        step.set(5);
        assert_eq!(step.done, 0);
    }

    #[test]
    fn sizes_read_in_mib() {
        assert_eq!(mib(3 << 19), "1.5 MiB");
    }
}
