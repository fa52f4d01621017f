//! Rendering of statistics (INFO, Prometheus, twemproxy JSON).
