//! The rollout driver's I/O pieces on their own: stats fetches, checks, the write guard.
