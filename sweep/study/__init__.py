"""Running a study: its set-up and worker processes (`runner`), the loop that runs trials to
the goal (`trial_loop`), one trial (`objective`), the dense baseline, what a resume may
change (`resume`, `fingerprints`), the study a command reads (`opened`), the rerun of a
trial, and `doctor`."""
