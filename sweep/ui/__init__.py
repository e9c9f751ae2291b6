"""What a person sees: tables (`terminal`), the progress of a run (`progress`), and the
servers of `sweep ui` and `sweep dashboard` (`servers`)."""
