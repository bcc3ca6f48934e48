//! Listeners, balancer and IOWorkers. PLACEHOLDER.
