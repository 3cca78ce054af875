"""What a run tells: the aggregate, statistics, the baseline gate, and the JSON, HTML, terminal, JUnit and GitHub reports."""
