using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Pretraining;
using RLHFSpec.Compute.Model.Tasks;
using RLHFSpec.Compute.Model.Transformer;
using RLHFSpec.Compute.Tests.Model;

namespace RLHFSpec.Compute.Tests.Pretraining;

/// <summary>
/// <see cref="PretrainModelSpec.DistillFrom"/>: a draft distilled from a teacher of its set learns the teacher's
/// distributions, not the task's reference tokens. The teacher here is a random model (its distributions have nothing
/// to do with the task), so a draft trained on the references agrees with it little and the same draft distilled from
/// it agrees much more (Σ min(p, q) on task sequences); the summary records the distillation; a missing teacher or a
/// model distilling from itself is refused naming it.
/// </summary>
[TestFixture]
public sealed class DistilledPretrainingTests
{
    [Test]
    public void A_distilled_draft_learns_the_teachers_distributions()
    {
        using var folder = new FormatsTestFolder();
        var tokenizer = ArithmeticTokenizer.Create();
        var options = new PretrainOptions { Seed = 5, Threads = 1, MaxTrainTokens = 40, EvalPrompts = 0 };
        string set = folder.File("set");
        // The teacher: random weights, saved where the set's policy goes.
        var teacherConfig = PretrainModelSpec.LlamaConfig(tokenizer, hidden: 32, layers: 1, heads: 2, kvHeads: 1, intermediate: 48, maxPositions: 256);
        using (var teacherWeights = TransformerWeights.Random(teacherConfig, seed: 9, std: 0.3))
            Checkpoint.Save(Path.Combine(set, Pretrainer.PolicyName), teacherConfig, teacherWeights.ToHostTensors(), tokenizer);

        var draftConfig = PretrainModelSpec.LlamaConfig(tokenizer, hidden: 16, layers: 1, heads: 2, kvHeads: 1, intermediate: 24, maxPositions: 256);
        PretrainModelSpec Draft(string name) => new()
        {
            Name = name, Steps = 60, PeakLearningRate = 1e-2, MinLearningRate = 1e-3, WarmupSteps = 2, TokensPerBatch = 128, Config = draftConfig,
        };
        var summary = Pretrainer.Run(set, options with
        {
            Models = [Draft("references"), Draft("distilled") with { DistillFrom = Pretrainer.PolicyName }],
        });
        Assert.That(summary.Models.Single(m => m.Name == "distilled").Source, Is.EqualTo("random weights, distilled from policy on the task"));
        Assert.That(summary.Models.Single(m => m.Name == "references").Source, Is.Null);

        var task = new ArithmeticTask(77);
        var sequences = Enumerable.Range(0, 16).Select(_ => task.Next())
            .Select(s => new DraftAgreement.Sequence(tokenizer.Encode(s.Prompt), tokenizer.Encode(s.ReferenceResponse))).ToArray();
        double Agreement(string name)
        {
            using var teacher = TransformerModel.Load(Path.Combine(set, Pretrainer.PolicyName), Backends.Cpu);
            using var draft = TransformerModel.Load(Path.Combine(set, name), Backends.Cpu);
            return DraftAgreement.Measure(teacher, draft, sequences, temperature: 1f).MeanOverlap;
        }
        double references = Agreement("references"), distilled = Agreement("distilled");
        TestContext.Out.WriteLine($"Σ min(p, q) with the teacher: trained on references {references:F3}, distilled {distilled:F3}");
        Assert.That(distilled, Is.GreaterThan(references + 0.1), "distillation moves the draft toward the teacher");

        Assert.That(() => Pretrainer.Run(folder.File("alone"), options with { Models = [Draft("d") with { DistillFrom = Pretrainer.PolicyName }] }),
            Throws.ArgumentException.With.Message.Contains("distils from policy").And.Message.Contains("train policy first"));
        Assert.That(() => Pretrainer.Run(folder.File("self"), options with { Models = [Draft("d") with { DistillFrom = "d" }] }),
            Throws.ArgumentException.With.Message.Contains("not another model of the set"));
    }
}
