/*
 * A JupyterLab plugin of the kit (no build step: a module federation container written by hand,
 * loaded like any prebuilt extension: JupyterLab's bootstrap.js calls init(), then get()).
 *
 * Why: JupyterLab 4 (seen with 4.5.0) loses a Run All clicked while a notebook's kernel is still
 * starting. Each cell's runCell finds no kernel yet and starts one itself: every cell at once, each
 * new session request superseding the one before (SessionContext._startSession shuts the older
 * kernel down), then clears its execution and returns. No execute_request is sent, or those sent
 * wait for a kernel that was shut down: nothing runs, or every cell stays [*] beside "Idle"
 * (jupyterlab/jupyterlab#11636, jupyter/notebook#4334). A presenter who opens a chapter and runs it
 * at once meets exactly that.
 *
 * What: any command whose id names a run ("notebook:run-all-cells", "runmenu:run-all",
 * "notebook:run-cell-and-select-next", ...) waits, on the notebook on show, for its session to be
 * ready (sessionContext.ready) and for its kernel's kernel_info reply (kernel.info: the websocket
 * and the kernel's channels answer), at most READY_MS; then it runs as JupyterLab would.
 * tests/test_browser.py::test_run_all_at_once_after_open_runs_every_cell shows the difference.
 */
(function () {
  var READY_MS = 120000;
  var RUN = /(^|:)(run|restart-run)/;

  function timeout(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  async function kernelReady(context) {
    await context.ready;
    var kernel = context.session && context.session.kernel;
    if (kernel) {
      await kernel.info;
    }
  }

  var plugin = {
    id: 'nirvana-run-when-ready:plugin',
    description: 'Run commands wait until the notebook\'s kernel is ready',
    autoStart: true,
    requires: [],
    activate: function (app) {
      var commands = app.commands;
      var execute = commands.execute.bind(commands);
      commands.execute = async function (id, args) {
        var widget = app.shell.currentWidget;
        var context = widget && widget.sessionContext;
        if (RUN.test(id) && context && !context.isDisposed) {
          var started = Date.now();
          await Promise.race([kernelReady(context), timeout(READY_MS)]);
          var waited = Date.now() - started;
          if (waited > 100) {
            console.info('nirvana-run-when-ready: ' + id + ' waited ' + waited + ' ms for the kernel');
          }
        }
        return execute(id, args);
      };
    }
  };

  var scope = (window._JUPYTERLAB = window._JUPYTERLAB || {});
  scope['nirvana-run-when-ready'] = {
    init: function () { return Promise.resolve(); },
    get: function (module) {
      if (module !== './extension') {
        return Promise.reject(new Error('nirvana-run-when-ready has no module ' + module));
      }
      return Promise.resolve(function () { return { __esModule: true, default: [plugin] }; });
    }
  };
})();
