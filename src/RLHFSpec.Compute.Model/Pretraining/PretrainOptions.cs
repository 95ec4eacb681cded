namespace RLHFSpec.Compute.Model.Pretraining;

/// <summary>Options of a <see cref="Pretrainer"/> run.</summary>
public sealed record PretrainOptions
{
    /// <summary>Seeds the training data, the initial weights and the evaluation set.</summary>
    public int Seed { get; init; } = 1234;

    /// <summary>When set, every model trains this many steps instead of its own budget.</summary>
    public int? Steps { get; init; }

    /// <summary>Train only the first model (the policy).</summary>
    public bool PolicyOnly { get; init; }

    /// <summary>When set, train only the models of these names (e.g. to refresh one draft).</summary>
    public IReadOnlyList<string>? Only { get; init; }

    /// <summary>ONNX Runtime intra-op threads; 0 = its default (all cores).</summary>
    public int Threads { get; init; }

    /// <summary>Training samples longer than this many input tokens are cut (the rare very long tail costs the most).</summary>
    public int MaxTrainTokens { get; init; } = 96;

    /// <summary>Evaluation prompts (drawn from the task, at most <see cref="MaxEvalTerms"/> terms); 0 skips evaluation.</summary>
    public int EvalPrompts { get; init; } = 64;

    public int MaxEvalTerms { get; init; } = 4;

    /// <summary>The models to train, policy first; null = <see cref="Pretrainer.DefaultModelSpecs"/>.</summary>
    public IReadOnlyList<PretrainModelSpec>? Models { get; init; }

    public void Validate()
    {
        if (Steps is { } s && s < 1) throw new ArgumentException($"--steps must be >= 1, got {s}");
        if (Threads < 0) throw new ArgumentException($"--threads must be >= 0, got {Threads}");
        if (MaxTrainTokens < 8) throw new ArgumentException($"max training tokens must be >= 8, got {MaxTrainTokens}");
        if (EvalPrompts < 0) throw new ArgumentException($"evaluation prompts must be >= 0, got {EvalPrompts}");
        if (MaxEvalTerms < 2) throw new ArgumentException($"evaluation terms must be >= 2, got {MaxEvalTerms}");
        if (Only is { Count: 0 }) throw new ArgumentException("--model: no model named");
        if (Models is { Count: 0 }) throw new ArgumentException("no models to pretrain");
        if (Models is not null)
        {
            foreach (var m in Models) m.Validate();
            var dup = Models.GroupBy(m => m.Name, StringComparer.OrdinalIgnoreCase).FirstOrDefault(g => g.Count() > 1);
            if (dup is not null) throw new ArgumentException($"pretrain model name '{dup.Key}' is used twice");
        }
    }
}
