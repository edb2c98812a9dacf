//! Pull progress: a bar per layer on a terminal (indicatif), plain Docker-style lines
//! otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use skiff_image::{Digest, PullEvent, PullEvents};

/// Shows pull events.
pub struct Progress {
    bars: Option<Arc<Bars>>,
    quiet: bool,
}

struct Bars {
    multi: MultiProgress,
    layers: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Progress {
    /// Bars when standard output is a terminal, lines otherwise, nothing when `quiet`.
    pub fn new(quiet: bool) -> Progress {
        let bars = (!quiet && std::io::stdout().is_terminal()).then(|| {
            Arc::new(Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
                layers: Mutex::new(HashMap::new()),
            })
        });
        Progress { bars, quiet }
    }

    /// The callback to hand to the pull.
    pub fn events(&self) -> PullEvents {
        if self.quiet {
            return Arc::new(|_| {});
        }
        match &self.bars {
            Some(bars) => {
                let bars = Arc::clone(bars);
                Arc::new(move |event| bars.show(event))
            }
            None => Arc::new(print_line),
        }
    }

    /// Leaves the finished bars on screen.
    pub fn finish(&self) {
        if let Some(bars) = &self.bars {
            if let Ok(layers) = bars.layers.lock() {
                for bar in layers.values() {
                    if !bar.is_finished() {
                        bar.abandon();
                    }
                }
            }
        }
    }
}

fn print_line(event: PullEvent) {
    match event {
        PullEvent::Resolved { layers, .. } => {
            for (layer, _) in layers {
                println!("{}: Pulling fs layer", layer.short());
            }
        }
        PullEvent::LayerExists { layer } => println!("{}: Already exists", layer.short()),
        PullEvent::Downloading { .. } => {}
        PullEvent::Extracting { layer } => println!("{}: Download complete", layer.short()),
        PullEvent::LayerDone { layer } => println!("{}: Pull complete", layer.short()),
    }
}

impl Bars {
    fn show(&self, event: PullEvent) {
        let Ok(mut layers) = self.layers.lock() else {
            return;
        };
        let style =
            ProgressStyle::with_template("{prefix}: {msg:<16} [{bar:40}] {bytes}/{total_bytes}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        let done_style = ProgressStyle::with_template("{prefix}: {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        match event {
            PullEvent::Resolved { layers: all, .. } => {
                for (layer, size) in all {
                    let bar = self.multi.add(ProgressBar::new(size));
                    bar.set_style(done_style.clone());
                    bar.set_prefix(layer.short().to_string());
                    bar.set_message("Pulling fs layer");
                    layers.insert(layer, bar);
                }
            }
            PullEvent::LayerExists { layer } => {
                if let Some(bar) = layers.get(&layer) {
                    bar.finish_with_message("Already exists");
                }
            }
            PullEvent::Downloading { layer, done, total } => {
                if let Some(bar) = layers.get(&layer) {
                    if bar.position() == 0 && done == 0 {
                        bar.set_style(style);
                        bar.set_length(total);
                        bar.set_message("Downloading");
                    }
                    bar.set_position(done);
                }
            }
            PullEvent::Extracting { layer } => {
                if let Some(bar) = layers.get(&layer) {
                    bar.set_style(done_style);
                    bar.set_message("Extracting");
                }
            }
            PullEvent::LayerDone { layer } => {
                if let Some(bar) = layers.get(&layer) {
                    bar.finish_with_message("Pull complete");
                }
            }
        }
    }
}
