using System.Text.RegularExpressions;
using RLHFSpec.Compute.Model.Tasks;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// The reward of a response, from the config's <c>reward</c> setting: <c>task</c> (the default task's exact verifier:
/// 1 for the right sum after the last '#', else 0), <c>regex:PATTERN</c> (1 when the whole response matches the .NET
/// regular expression), <c>exact:TEXT</c> (1 when the response is exactly TEXT), or <c>model:DIR</c> (the score of a
/// reward model trained by <c>rlhfspec train-rm</c>; batched by the trainer, see <see cref="RewardModel"/>).
/// </summary>
public sealed class RewardRule
{
    private readonly Func<string, string, double>? _score;

    private RewardRule(string spec, Func<string, string, double>? score, bool needsTaskPrompts, string? modelFolder = null)
    {
        Spec = spec;
        _score = score;
        NeedsTaskPrompts = needsTaskPrompts;
        ModelFolder = modelFolder;
    }

    public string Spec { get; }

    /// <summary>True for <c>task</c>: every prompt must be a default-task prompt.</summary>
    public bool NeedsTaskPrompts { get; }

    /// <summary>For <c>model:DIR</c>: the reward model's folder (its scores come from <see cref="RewardModel.Score"/>); else null.</summary>
    public string? ModelFolder { get; }

    public double Score(string prompt, string response) => _score is { } score ? score(prompt, response)
        : throw new InvalidOperationException($"reward '{Spec}': a reward model scores whole batches (RewardModel.Score), not one response");

    public static RewardRule Parse(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (spec == "task") return new RewardRule(spec, ArithmeticTask.Reward, needsTaskPrompts: true);
        if (spec.StartsWith("regex:", StringComparison.Ordinal))
        {
            Regex regex;
            try { regex = new Regex($"^(?:{spec[6..]})$", RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1)); }
            catch (ArgumentException e) { throw new ArgumentException($"reward '{spec}': not a valid regular expression ({e.Message})"); }
            return new RewardRule(spec, (_, response) => regex.IsMatch(response) ? 1 : 0, needsTaskPrompts: false);
        }
        if (spec.StartsWith("exact:", StringComparison.Ordinal))
        {
            string text = spec[6..];
            return new RewardRule(spec, (_, response) => response == text ? 1 : 0, needsTaskPrompts: false);
        }
        if (spec.StartsWith("model:", StringComparison.Ordinal))
        {
            string folder = spec[6..];
            if (folder.Length == 0) throw new ArgumentException($"reward '{spec}': expected model:DIR, a reward model folder (from rlhfspec train-rm)");
            return new RewardRule(spec, null, needsTaskPrompts: false, modelFolder: folder);
        }
        throw new ArgumentException($"reward '{spec}': expected task, regex:PATTERN, exact:TEXT or model:DIR");
    }
}
