/**
 * A container's log in the main area, following it as it grows (`GET containers/{id}/logs?follow=1`:
 * JSON lines {"log": text}, then {"exited": true, "status"} when the container ends), with a search
 * that shows only the lines holding the text, and a download of what the view holds.
 */

import { MainAreaWidget } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';
import { downloadIcon, LabIcon, ToolbarButton } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { CellhopApi } from './api';
import { matchingLines, takeLines } from './logtext';

/** The most text the view keeps (its end): a log may grow without end. */
export const MAX_KEPT = 2 * 1024 * 1024;

const EMPTY =
  'Nothing in this log yet. What the cells print shows in the notebook that ran them; this log ' +
  "holds what the container's own process writes outside of a cell (native libraries, subprocesses, a crash).";

export function logWidget(api: CellhopApi, id: string, icon: LabIcon): MainAreaWidget {
  const content = new Widget();
  content.addClass('jp-CellhopLogs');
  const pre = document.createElement('pre');
  const state = document.createElement('div');
  state.className = 'jp-CellhopLogs-state';
  content.node.append(state, pre);
  let text = '';
  let query = '';
  let stopped = false;
  const controller = new AbortController();

  const render = () => {
    const atEnd = content.node.scrollHeight - content.node.scrollTop - content.node.clientHeight < 40;
    pre.textContent = matchingLines(text, query) || (query ? `No line holds "${query}".` : EMPTY);
    if (atEnd) {
      content.node.scrollTop = content.node.scrollHeight; // follows, unless the reader scrolled up
    }
  };

  const follow = async () => {
    state.textContent = 'Following the log as it grows…';
    try {
      const url = api.url('containers', id, 'logs') + '?follow=1&tail=2000';
      const response = await ServerConnection.makeRequest(url, { signal: controller.signal }, api.settings);
      if (response.status === 501) {
        // a runtime whose logs are not files here (Ray): the log as it is now
        text = (await api.logs(id)).slice(-MAX_KEPT);
        state.textContent = "This runtime's logs cannot be followed: the log as it was when opened.";
        render();
        return;
      }
      if (!response.ok || !response.body) {
        const body = await response.text();
        let message = `${response.status} ${response.statusText}`;
        try {
          message = JSON.parse(body).message ?? message;
        } catch {
          // not JSON: the status says it
        }
        throw new Error(message);
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          break;
        }
        buffer += decoder.decode(value, { stream: true });
        const taken = takeLines(buffer);
        buffer = taken.rest;
        for (const line of taken.lines) {
          if (typeof line.log === 'string') {
            text = (text + line.log).slice(-MAX_KEPT);
          } else if (line.exited) {
            state.textContent = `The container ended: ${line.status?.description ?? 'exited'}.`;
            stopped = true;
          }
        }
        render();
      }
      if (!stopped) {
        state.textContent = 'The log stream ended.';
      }
    } catch (err) {
      if (!controller.signal.aborted) {
        state.textContent = `Could not follow the log of container ${id}: ${(err as Error).message}`;
        render();
      }
    }
  };

  const widget = new MainAreaWidget({ content });
  widget.id = `cellhop-logs-${id}`;
  widget.title.label = `cellhop log ${id.slice(0, 8)}`;
  widget.title.icon = icon;
  widget.title.closable = true;
  const search = document.createElement('input');
  search.type = 'search';
  search.placeholder = 'Search the log';
  search.className = 'jp-CellhopLogs-search';
  search.oninput = () => {
    query = search.value;
    render();
  };
  const searchItem = new Widget({ node: search });
  widget.toolbar.addItem('search', searchItem);
  widget.toolbar.addItem(
    'download',
    new ToolbarButton({
      icon: downloadIcon,
      tooltip: 'Download the log (what this view holds)',
      onClick: () => {
        const link = document.createElement('a');
        link.href = URL.createObjectURL(new Blob([text], { type: 'text/plain' }));
        link.download = `cellhop-${id}.log`;
        link.click();
        setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
      }
    })
  );
  widget.disposed.connect(() => controller.abort());
  render();
  void follow();
  return widget;
}
