namespace RLHFSpec.Compute.Rlhf;

/// <summary>Where a resumed run starts: its latest checkpoint folder, that checkpoint's state, and the hash of the run's config.json.</summary>
internal sealed record ResumePoint(string Latest, CheckpointState State, string ConfigSha256);
