using RLHFSpec.Compute.Model.Formats;

namespace RLHFSpec.Compute.Tests.Model;

public class AtomicFileTests
{
    [Test]
    public void AFailedWriteLeavesTheTargetUntouchedAndNoTemporaryFile()
    {
        var dir = Directory.CreateTempSubdirectory("rlhfspec-atomic-");
        try
        {
            var path = Path.Combine(dir.FullName, "out.jsonl");
            File.WriteAllText(path, "old");
            Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(path, s => { s.Write("half"u8); throw new InvalidOperationException("boom"); }));
            Assert.That(File.ReadAllText(path), Is.EqualTo("old"));
            Assert.That(dir.GetFiles(), Has.Length.EqualTo(1), "no temporary file is left");
            AtomicFile.Write(path, s => s.Write("new"u8));
            Assert.That(File.ReadAllText(path), Is.EqualTo("new"));
        }
        finally { dir.Delete(recursive: true); }
    }

    [Test]
    public void AFailedFolderWriteLeavesTheOldFolderWholeAndNoTemporaryFolder()
    {
        var dir = Directory.CreateTempSubdirectory("rlhfspec-atomic-");
        try
        {
            var target = Path.Combine(dir.FullName, "checkpoint");
            AtomicFile.WriteFolder(target, temp => File.WriteAllText(Path.Combine(temp, "a.txt"), "old"));
            Assert.Throws<InvalidOperationException>(() => AtomicFile.WriteFolder(target, temp =>
            {
                File.WriteAllText(Path.Combine(temp, "a.txt"), "half");
                throw new InvalidOperationException("boom");
            }));
            Assert.That(File.ReadAllText(Path.Combine(target, "a.txt")), Is.EqualTo("old"));
            Assert.That(dir.GetDirectories().Select(d => d.Name), Is.EqualTo(new[] { "checkpoint" }), "no temporary folder is left");
            AtomicFile.WriteFolder(target, temp => File.WriteAllText(Path.Combine(temp, "b.txt"), "new"));
            Assert.That(Directory.GetFiles(target).Select(Path.GetFileName), Is.EqualTo(new[] { "b.txt" }), "replaced as a whole");
            Assert.That(dir.GetDirectories(), Has.Length.EqualTo(1));
        }
        finally { dir.Delete(recursive: true); }
    }

    [Test]
    public void A_symlink_is_written_through_to_its_target_and_stays_a_link()
    {
        var dir = Directory.CreateTempSubdirectory("rlhfspec-atomic-");
        try
        {
            string target = Path.Combine(dir.FullName, "real.txt"), link = Path.Combine(dir.FullName, "link.txt");
            File.WriteAllText(target, "old");
            File.CreateSymbolicLink(link, "real.txt");
            AtomicFile.WriteText(link, "new");
            Assert.That(new FileInfo(link).LinkTarget, Is.EqualTo("real.txt"), "the link is still a link");
            Assert.That(File.ReadAllText(target), Is.EqualTo("new"));
            string dangling = Path.Combine(dir.FullName, "dangling.txt");
            File.CreateSymbolicLink(dangling, "made.txt");
            AtomicFile.WriteText(dangling, "made");
            Assert.That(File.ReadAllText(Path.Combine(dir.FullName, "made.txt")), Is.EqualTo("made"), "a dangling link's target is created");
            Assert.That(new FileInfo(dangling).LinkTarget, Is.EqualTo("made.txt"));
            Assert.That(dir.GetFiles().Select(f => f.Name).Order(), Is.EqualTo(new[] { "dangling.txt", "link.txt", "made.txt", "real.txt" }), "no temporary file is left");
        }
        finally { dir.Delete(recursive: true); }
    }

    [Test]
    public void A_folder_is_refused_and_left_alone()
    {
        var dir = Directory.CreateTempSubdirectory("rlhfspec-atomic-");
        try
        {
            string folder = Path.Combine(dir.FullName, "out");
            Directory.CreateDirectory(folder);
            File.WriteAllText(Path.Combine(folder, "keep.txt"), "keep");
            var e = Assert.Throws<IOException>(() => AtomicFile.WriteText(folder, "x"));
            Assert.That(e!.Message, Does.Contain(folder).And.Contain("folder"));
            Assert.That(File.ReadAllText(Path.Combine(folder, "keep.txt")), Is.EqualTo("keep"));
            Assert.That(AtomicFile.WhyNotWritable(folder), Does.Contain("folder"));
            Assert.That(dir.GetFiles(), Is.Empty, "no temporary file is left");
        }
        finally { dir.Delete(recursive: true); }
    }

    [Test]
    public void Devices_and_fifos_are_written_directly_not_replaced()
    {
        if (OperatingSystem.IsWindows()) Assert.Ignore("Unix devices and FIFOs");
        Assert.That(FileKinds.Of("/dev/null"), Is.EqualTo(FileKind.Special));
        Assert.That(AtomicFile.WhyNotWritable("/dev/null"), Is.Null);
        AtomicFile.WriteText("/dev/null", "discarded");
        Assert.That(FileKinds.Of("/dev/null"), Is.EqualTo(FileKind.Special), "/dev/null is still a device");
        var full = Assert.Throws<IOException>(() => AtomicFile.WriteText("/dev/full", "x"));
        Assert.That(full!.Message, Does.StartWith("'/dev/full':"));
        Assert.That(FileKinds.Of("/dev/full"), Is.EqualTo(FileKind.Special));

        var dir = Directory.CreateTempSubdirectory("rlhfspec-atomic-");
        try
        {
            string fifo = Path.Combine(dir.FullName, "pipe");
            using (var mk = System.Diagnostics.Process.Start("mkfifo", fifo)) mk.WaitForExit();
            Assert.That(FileKinds.Of(fifo), Is.EqualTo(FileKind.Special));
            var reader = Task.Run(() => File.ReadAllText(fifo));
            AtomicFile.WriteText(fifo, "through the pipe");
            Assert.That(reader.Wait(TimeSpan.FromSeconds(10)), "the reader got end of file");
            Assert.That(reader.Result, Is.EqualTo("through the pipe"));
            Assert.That(FileKinds.Of(fifo), Is.EqualTo(FileKind.Special), "the FIFO is still a FIFO");
            Assert.That(dir.GetFiles().Select(f => f.Name), Is.EqualTo(new[] { "pipe" }), "no temporary file is left");
        }
        finally { dir.Delete(recursive: true); }
    }

    [Test]
    public void A_failed_write_names_the_users_path_not_the_temporary_file()
    {
        if (OperatingSystem.IsWindows()) Assert.Ignore("/proc");
        var e = Assert.Catch<IOException>(() => AtomicFile.WriteText("/proc/x", "x"));
        Assert.That(e!.Message, Does.Contain("/proc/x").And.Not.Contain(".tmp"));
        Assert.That(AtomicFile.WhyNotWritable("/proc/x"), Is.Not.Null.And.Not.Contain(".tmp"));
    }
}
