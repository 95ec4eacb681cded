using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Pretraining;
using RLHFSpec.Compute.Tests.Model;

namespace RLHFSpec.Compute.Tests.Pretraining;

/// <summary>
/// A set's draft chosen by measurement (<see cref="SetDraftChoice"/>): the predicted batch-1 speedup of chains against
/// its closed form, the ranking, draft.json written and read back, and <see cref="DefaultModels.SetDraftName"/> taking
/// the choice, falling back to the fixed name without one, and refusing a choice the set cannot honour.
/// </summary>
public class SetDraftChoiceTests
{
    // Verify cost of 1..9 tokens at batch 1: 1.0 for one, then 0.1 more per token (a bandwidth-bound step).
    private static readonly double[] Verify = Enumerable.Range(1, 9).Select(k => 1.0 + 0.1 * (k - 1)).ToArray();

    [Test]
    public void The_predicted_speedup_is_the_best_chain_of_the_closed_form([Values(0.0, 0.3, 0.7, 0.9, 1.0)] double agreement, [Values(0.0, 0.02, 0.3)] double draft)
    {
        var (depth, speedup) = SetDraftChoice.PredictedSpeedup(agreement, draft, Verify);
        double best = 1.0;
        int bestK = 0;
        for (int k = 1; k < Verify.Length; k++)
        {
            double emitted = Enumerable.Range(0, k + 1).Sum(j => Math.Pow(agreement, j));
            double s = emitted / ((Verify[k] + k * draft) / Verify[0]);
            if (s > best) (best, bestK) = (s, k);
        }
        Assert.That(speedup, Is.EqualTo(best).Within(1e-12));
        Assert.That(depth, Is.EqualTo(bestK));
        if (agreement == 0) Assert.That((depth, speedup), Is.EqualTo((0, 1.0)), "a draft never accepted never pays");
        if (agreement == 1 && draft == 0) Assert.That(depth, Is.EqualTo(8), "free, always-accepted drafts go as deep as measured");
    }

    [Test]
    public void A_cheaper_draft_wins_at_equal_agreement_and_a_better_one_at_equal_cost()
    {
        var cheap = SetDraftChoice.PredictedSpeedup(0.8, 0.01, Verify).Speedup;
        var dear = SetDraftChoice.PredictedSpeedup(0.8, 0.05, Verify).Speedup;
        var better = SetDraftChoice.PredictedSpeedup(0.85, 0.05, Verify).Speedup;
        Assert.That(cheap, Is.GreaterThan(dear));
        Assert.That(better, Is.GreaterThan(dear));
        var choice = SetDraftChoice.Choose(
            [new("draft-small", 0.8, 0.05, 4, dear), new("draft-tiny", 0.8, 0.01, 5, cheap), new("draft-skip", 0.85, 0.05, 4, better)], Verify, "cpu");
        // Here the better draft's agreement (5.18 tokens a chain of 8) outweighs the cheaper one's cost (2.47× vs 2.43×).
        Assert.That(choice.Draft, Is.EqualTo("draft-skip"));
        Assert.That(choice.Candidates.Select(c => c.Name), Is.EqualTo(new[] { "draft-skip", "draft-tiny", "draft-small" }), "best predicted first");
    }

    [Test]
    public void Bad_measurements_are_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => SetDraftChoice.PredictedSpeedup(1.2, 0.01, Verify));
        Assert.Throws<ArgumentOutOfRangeException>(() => SetDraftChoice.PredictedSpeedup(0.5, -1, Verify));
        Assert.Throws<ArgumentException>(() => SetDraftChoice.PredictedSpeedup(0.5, 0.01, []));
        Assert.Throws<ArgumentException>(() => SetDraftChoice.PredictedSpeedup(0.5, 0.01, [1.0, 0.0]));
        Assert.Throws<ArgumentException>(() => SetDraftChoice.Choose([], Verify, "cpu"));
    }

    [Test]
    public void The_set_drafts_with_its_recorded_choice_else_the_fixed_name()
    {
        using var folder = new FormatsTestFolder();
        void Model(string name)
        {
            Directory.CreateDirectory(folder.File(name));
            File.WriteAllText(Path.Combine(folder.File(name), ModelConfig.FileName), "{}");
        }
        Model(Pretrainer.DraftSmallName);
        Model(Pretrainer.DraftTinyName);
        Assert.That(SetDraftChoice.TryLoad(folder.Path), Is.Null);
        Assert.That(DefaultModels.SetDraftName(folder.Path, Pretrainer.MediumSetName), Is.EqualTo(Pretrainer.DraftTinyName), "no draft.json: the fixed name");

        var choice = SetDraftChoice.Choose([new(Pretrainer.DraftSmallName, 0.72, 5e-5, 5, 2.4), new(Pretrainer.DraftTinyName, 0.66, 1.5e-5, 4, 2.2)], Verify, "cpu");
        choice.Save(folder.Path);
        var back = SetDraftChoice.TryLoad(folder.Path)!;
        Assert.That(back.Draft, Is.EqualTo(Pretrainer.DraftSmallName));
        Assert.That(back.Candidates, Is.EqualTo(choice.Candidates));
        Assert.That(back.VerifySeconds, Is.EqualTo(Verify));
        Assert.That(back.Device, Is.EqualTo("cpu"));
        Assert.That(File.ReadAllText(folder.File(SetDraftChoice.FileName)), Does.Contain("\"predicted_speedup\""), "snake_case keys, as pretrain.json");
        Assert.That(DefaultModels.SetDraftName(folder.Path, Pretrainer.MediumSetName), Is.EqualTo(Pretrainer.DraftSmallName), "the measured choice");

        (choice with { Draft = Pretrainer.DraftSkipName }).Save(folder.Path);
        var missing = Assert.Throws<InvalidDataException>(() => DefaultModels.SetDraftName(folder.Path, Pretrainer.MediumSetName))!;
        Assert.That(missing.Message, Does.Contain(SetDraftChoice.FileName).And.Contain("draft-skip"));

        foreach (var bad in new[] { "{ not json", "{\"draft\": \"\"}", "{\"draft\": \"../policy\"}", "null" })
        {
            File.WriteAllText(folder.File(SetDraftChoice.FileName), bad);
            var e = Assert.Throws<InvalidDataException>(() => SetDraftChoice.TryLoad(folder.Path), bad)!;
            Assert.That(e.Message, Does.StartWith(folder.File(SetDraftChoice.FileName)), bad);
        }
    }
}
