"""Reading a study back: the Pareto front and hypervolume (`pareto`), what `sweep pareto`
reports, tags and plots (`front`), `sweep best` (`selection`), tables and the report
(`analysis`), plots, the columns people compare, and the folders results are written to
(`outputs`)."""
